"""The layering of dlu_mm, read from the source (no import runs): each layer imports only the
layers below it, no import circle among dlu_mm's modules (function-local imports count), no
module imports a private name of another package, and the compiled extension is loaded by
``dlu_mm.ops.native`` alone.

    configs/, tools/                                    what a user runs
    dlu_mm.det / seg / pretrain / integrations          framework glue
    dlu_mm.analysis / checkpoint / converters /         support (FLOPs, checkpoints, data)
      datasets / utils.dist, the package itself
    dlu_mm.upsamplers                                   one nn.Module per operator
    dlu_mm.ops                                          functional ops -> the C++ extension
    dlu_mm.utils (argument checks), dlu_mm.version      leaves
"""
import ast
import functools
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (module prefix, layer); the longest matching prefix decides
LAYERS = [
    ('dlu_mm.version', 0), ('dlu_mm.utils', 0),
    ('dlu_mm.ops', 1),
    ('dlu_mm.upsamplers', 2),
    ('dlu_mm', 3), ('dlu_mm.utils.dist', 3),
    ('dlu_mm.det', 4), ('dlu_mm.seg', 4), ('dlu_mm.pretrain', 4), ('dlu_mm.integrations', 4),
    ('tools', 5), ('configs', 5),
]
LAYER_NAMES = {0: 'leaves', 1: 'ops', 2: 'upsamplers', 3: 'support', 4: 'framework glue',
               5: 'configs/tools'}


def layer_of(module):
    matches = [(len(prefix), layer) for prefix, layer in LAYERS
               if module == prefix or module.startswith(prefix + '.')]
    assert matches, f'{module} belongs to no layer: add it to LAYERS'
    return max(matches)[1]


def _module_files():
    """{module name: path} of dlu_mm's modules and of the Python files under tools/, configs/."""
    files = {}
    for top in ('dlu_mm', 'tools', 'configs'):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if not name.endswith('.py'):
                    continue
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                files[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
    return files


MODULES = _module_files()


@functools.lru_cache(maxsize=None)
def _tree(path):
    with open(path) as file:
        source = file.read()
    return source, ast.parse(source, path)


def _imports(module, path):
    """Yield (imported dlu_mm module, imported name or None, line) for every import in the file,
    function-local ones included; ``from pkg import sub`` yields the submodule."""
    is_package = path.endswith('__init__.py')
    package = module if is_package else module.rpartition('.')[0]
    for node in ast.walk(_tree(path)[1]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'dlu_mm':
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                parts = parts[:len(parts) - node.level + 1]
                target = '.'.join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != 'dlu_mm':
                continue
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _dlu_mm_aliases(path):
    """Names bound by imports from dlu_mm modules of other packages (``from dlu_mm.ops import
    export as onnx_export`` binds onnx_export; ``from .x import y`` is the same package)."""
    names = set()
    for node in ast.walk(_tree(path)[1]):
        if isinstance(node, ast.ImportFrom) and (node.level > 1 or
                                                 (node.module or '').startswith('dlu_mm')):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname for alias in node.names
                         if alias.asname and alias.name.startswith('dlu_mm'))
    return names


def _private(name):
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def _package(module):
    """The package a module belongs to (a package belongs to itself)."""
    is_package = MODULES.get(module, '').endswith('__init__.py')
    return module if is_package or '.' not in module else module.rpartition('.')[0]


def _owner_of_private(imported):
    """The package whose private name ``imported`` reaches (None when nothing in it is private):
    for ``dlu_mm.ops._compat.X`` dlu_mm.ops, for ``dlu_mm.pretrain.ddf_conv._check`` dlu_mm.pretrain."""
    parts = imported.split('.')
    first = next((i for i, part in enumerate(parts) if _private(part)), None)
    return None if first is None else _package('.'.join(parts[:first]))


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_layers_import_only_layers_below():
    wrong = []
    for module, path in MODULES.items():
        for target, _, line in _imports(module, path):
            if target == module:
                continue
            if layer_of(target) > layer_of(module):
                wrong.append(f'{path}:{line}: {module} ({LAYER_NAMES[layer_of(module)]}) '
                             f'imports {target} ({LAYER_NAMES[layer_of(target)]})')
    assert not wrong, '\n'.join(wrong)


def test_no_import_circle():
    graph = {module: {target for target, _, _ in _imports(module, path)
                      if target != module and target in MODULES}
             for module, path in MODULES.items()}
    state, stack, circles = {}, [], []

    def visit(module):  # depth-first search; a grey node on the stack closes a circle
        state[module] = 'grey'
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 'grey':
                circles.append(' -> '.join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 'black'

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, 'import circles:\n' + '\n'.join(circles)


def test_no_private_name_of_another_package():
    wrong = []
    for module, path in MODULES.items():
        for target, name, line in _imports(module, path):
            imported = f'{target}.{name}' if name else target
            owner = _owner_of_private(imported)
            if owner is not None and owner != _package(module):
                wrong.append(f'{path}:{line}: {module} imports {imported}')
        aliases = _dlu_mm_aliases(path)
        for node in ast.walk(_tree(path)[1]):
            if (isinstance(node, ast.Attribute) and _private(node.attr)
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                wrong.append(f'{path}:{node.lineno}: {module} uses {node.value.id}.{node.attr}')
    assert not wrong, '\n'.join(wrong)


def test_only_ops_native_loads_the_extension():
    """The C++ layer sits below dlu_mm.ops: nothing else names the extension or its ops."""
    wrong = []
    for module, path in MODULES.items():
        if module == 'dlu_mm.ops.native':
            continue
        source, tree = _tree(path)
        for node in ast.walk(tree):
            text = ast.get_source_segment(source, node) if isinstance(
                node, (ast.Attribute, ast.Constant)) else None
            if text and ('torch.ops.dlu_mm.' in text and not text.startswith(('"', "'"))
                         or '_C_torch' in text and isinstance(node, ast.Attribute)):
                wrong.append(f'{path}:{node.lineno}: {text}')
    assert not wrong, '\n'.join(sorted(set(wrong)))


def test_ops_import_no_framework():
    """dlu_mm.ops imports with torch alone: no mmengine / mmcv / mmdet / mmseg / mmpretrain
    import anywhere in it (the GPU box and plain PyTorch users have none)."""
    frameworks = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith('dlu_mm.ops'):
            continue
        for node in ast.walk(_tree(path)[1]):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            wrong += [f'{path}:{node.lineno}: imports {imported}' for imported in names
                      if imported.split('.')[0] in frameworks]
    assert not wrong, '\n'.join(wrong)


def test_modules_stay_small():
    """One concept per module: none of dlu_mm's modules grows past ~450 lines."""
    long = {path: count for path in (MODULES[m] for m in MODULES if m.startswith('dlu_mm'))
            if (count := _tree(path)[0].count('\n')) > 450}
    assert not long, long
