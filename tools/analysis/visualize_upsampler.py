"""Pictures of what the learnable upsamplers do, as PNGs (matplotlib Agg, no display needed).

    python tools/analysis/visualize_upsampler.py --out-dir work_dirs/vis    # generated image
    python tools/analysis/visualize_upsampler.py --image cat.jpg --out-dir work_dirs/vis
    python tools/analysis/visualize_upsampler.py --image cat.jpg --config CONFIG \
        --checkpoint CKPT --out-dir work_dirs/vis                              # trained upsampler

Writes
  dlu_offsets.png     DLU's guidance offsets (group 0) as arrows over the image: each arrow starts
                      at an output pixel and points to where that pixel's kernel is sampled from
                      the low-res kernel space (length in image pixels).
  lda_aqu_points.png  LDA-AQU's sampling points (all groups) of a few output pixels.
  kernels.png         CARAFE's and DLU's k x k reassembly kernels at those pixels.
  feature_maps.png    the input feature and its upsampled versions, several upsamplers side by side
                      (the 3 principal components of the input's channels shown as RGB).

Features: without ``--config`` the low-res feature is a fixed random projection of the image's
stride x stride patches (a stand-in for a backbone feature) and every upsampler is randomly
initialised. At their own init DLU's offsets are exactly zero, LDA-AQU's points sit on the regular
grid and CARAFE's kernels are box averages, so by default every conv weight gets extra noise
(``--perturb``, std = gain / sqrt(fan_in)) to make the pictures show something; every title says
whether it shows a trained, a random or a perturbed-random upsampler. With ``--config`` (and
``--checkpoint``) the model is built, the image runs through it, and the features and the
upsampler of ``--layer`` (default: the last upsampler called) are the model's; the other
upsamplers in the comparison stay random on those features.
"""
import argparse
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from dlu_mm.analysis import record_op_calls  # noqa: E402
from dlu_mm.ops.reassemble import sample_kernel_space  # noqa: E402
from dlu_mm.upsamplers import BaseUpsampler, build_upsampler, is_guided  # noqa: E402

FIGURES = ('dlu_offsets', 'lda_aqu_points', 'kernels', 'feature_maps')
DEFAULT_COMPARE = ('nearest', 'bilinear', 'CARAFE', 'DLU', 'LDAAQU', 'DySample', 'FADE', 'SAPA')
MARKERS = 'os^vD<>p'
FEATURE_COLUMNS = 5  # panels per row of feature_maps.png


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def synthetic_image(size=256):
    """(size, size, 3) float image in [0, 1]: a soft gradient with a disc, a square, a bar."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.25 + 0.35 * xx, 0.3 + 0.25 * yy, 0.45 - 0.2 * xx], axis=-1)
    image[(xx - 0.3) ** 2 + (yy - 0.32) ** 2 < 0.17 ** 2] = (0.9, 0.35, 0.2)
    image[(xx > 0.55) & (xx < 0.85) & (yy > 0.5) & (yy < 0.82)] = (0.2, 0.65, 0.35)
    image[(np.abs((xx - 0.15) - (yy - 0.6)) < 0.04) & (yy > 0.6) & (yy < 0.95)] = (0.95, 0.9, 0.3)
    return image.astype(np.float32)


def load_image(path):
    image = plt.imread(path)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.float32)


def image_features(image, channels, stride, seed=0):
    """(1, C, H//stride, W//stride): fixed random projection of stride x stride patches,
    standardised per channel (a stand-in for a backbone feature)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, 3, stride, stride, generator=generator)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W)
    feature = F.conv2d(pixels - pixels.mean((2, 3), keepdim=True), weight, stride=stride)
    feature = feature - feature.mean((2, 3), keepdim=True)
    return feature / (feature.std((2, 3), keepdim=True) + 1e-6)


def perturb(module, gain, seed=0):
    """Add N(0, (gain / sqrt(fan_in))^2) noise to every conv weight (random-init pictures)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel()
                noise = torch.randn(m.weight.shape, generator=generator)
                m.weight.add_(noise.to(m.weight) * gain / math.sqrt(fan_in))
    return module


# ---------------------------------------------------------------------------------------------
# Scene: one feature map, its guide, and the upsamplers to draw
# ---------------------------------------------------------------------------------------------
class Scene:
    """What every figure needs: image, feature x (1, C, h, w), guide (1, C, s*h, s*w), stride
    (image pixels per feature pixel), scale s, and {label: (module, state string)}."""

    def __init__(self, image, x, guide, stride, scale_factor, modules):
        self.image, self.x, self.guide = image, x, guide
        self.stride, self.scale_factor, self.modules = stride, scale_factor, modules

    def inputs(self, module):
        return (self.x, self.guide) if is_guided(module) else (self.x, )

    def run(self, label):
        """Forward of one upsampler -> (output, [(op_name, args), ...] of its dlu_mm op calls)."""
        module, _ = self.modules[label]
        with torch.no_grad(), record_op_calls() as calls:
            out = module(*self.inputs(module))
        return out, calls

    def find(self, upsampler_type):
        for label, (module, state) in self.modules.items():
            if type(module).__name__ == upsampler_type:
                return label, module, state
        return None


def random_scene(image, upsamplers, channels, stride, scale_factor, gain, seed=0):
    x = image_features(image, channels, stride, seed)
    guide = image_features(image, channels, max(stride // scale_factor, 1), seed + 1)
    guide = F.interpolate(guide, size=(x.shape[2] * scale_factor, x.shape[3] * scale_factor),
                          mode='bilinear', align_corners=False)  # exactly s x x's size
    state = f'random init + conv noise (gain {gain:g}), not trained' if gain > 0 else \
        'random init (operator\'s own init), not trained'
    modules = {}
    for i, name in enumerate(upsamplers):
        torch.manual_seed(seed + i)
        module = build_upsampler(dict(type=name), channels, scale_factor).eval()
        if gain > 0:
            perturb(module, gain, seed + i)
        modules[name] = (module, state)
    return Scene(image, x, guide, stride, scale_factor, modules)


def model_scene(image, config, checkpoint, layer, upsamplers, gain, seed=0, cfg_options=None):
    """Run the image through a dlu_mm detection / segmentation model and capture one upsampler
    call: its input, guide and (trained if ``checkpoint``) module."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model).eval()
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    calls = []
    hooks = [module.register_forward_hook(
        lambda mod, args, out, name=name: calls.append((name, mod, args)))
        for name, module in model.named_modules() if isinstance(module, BaseUpsampler)]
    if not hooks:
        raise ValueError(f'{config} has no dlu_mm upsampler (set upsample_cfg.type)')
    pixels = torch.from_numpy(np.round(image * 255).astype(np.uint8)).permute(2, 0, 1)
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[pixels]), False)
        head = getattr(model, 'decode_head', None) or getattr(model, 'panoptic_head', None)
        decoder = getattr(head, 'pixel_decoder', None)
        if decoder is not None:  # (Mask2)MaskFormer: the upsamplers sit in the pixel decoder
            feats = model.extract_feat(data['inputs'])
            if 'batch_img_metas' in decoder.forward.__code__.co_varnames:  # MaskFormer's
                shape = tuple(data['inputs'].shape[-2:])
                decoder(feats, [dict(batch_input_shape=shape, img_shape=shape)])
            else:
                decoder(feats)
        elif cfg.get('default_scope') == 'mmseg':
            model(data['inputs'], None, mode='tensor')
        else:  # the necks (FPN, PAFPN, YOLOX, RTMDet) hold the upsamplers
            model.extract_feat(data['inputs'])
    for hook in hooks:
        hook.remove()
    chosen = [c for c in calls if c[0] == layer] if layer else calls[-1:]
    if not chosen:
        raise ValueError(f'--layer {layer!r} was not called; upsamplers called: '
                         f'{[c[0] for c in calls]}')
    name, trained, args = chosen[0]
    x = args[0]
    guide = args[1] if len(args) > 1 else None
    stride = data['inputs'].shape[2] / x.shape[2]
    s = trained.scale_factor
    if guide is None:  # a guide for the guided comparisons: resize x's own feature
        guide = F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)
    if checkpoint:
        state = f'trained ({os.path.basename(checkpoint)}), {name}'
    else:  # same reason as for the stand-alone upsamplers: their own init draws nothing
        if gain > 0:
            perturb(trained, gain, seed)
        state = (f'random init of {os.path.basename(config)}, {name}'
                 + (f' + conv noise (gain {gain:g}), not trained' if gain > 0 else ''))
    modules = {f'{type(trained).__name__} (model)': (trained, state)}
    scene = random_scene(image, [u for u in upsamplers if u != type(trained).__name__],
                         x.shape[1], 1, s, gain, seed)
    for label, value in scene.modules.items():
        modules[label] = value
    return Scene(image, x, guide, stride, s, modules)


# ---------------------------------------------------------------------------------------------
# Figures (fixed size in inches x dpi: the PNG size is known in advance)
# ---------------------------------------------------------------------------------------------
def figure_size(name, num_pixels=3, num_upsamplers=len(DEFAULT_COMPARE)):
    """(width, height) in inches of figure ``name``."""
    return {'dlu_offsets': (7.0, 7.6), 'lda_aqu_points': (7.0, 7.6),
            'kernels': (3.2 + 2.2 * num_pixels, 5.4),
            'feature_maps': (2.6 * min(num_upsamplers + 1, FEATURE_COLUMNS),
                             0.5 + 2.7 * math.ceil((num_upsamplers + 1) / FEATURE_COLUMNS))}[name]


def _show_image(ax, scene):
    h, w = scene.image.shape[:2]
    ax.imshow(scene.image, extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _output_pixel(scene, yx):
    """Image pixel (y, x) -> output pixel (i', j') of the upsampled map (clamped)."""
    s, stride = scene.scale_factor, scene.stride
    out_h, out_w = scene.x.shape[2] * s, scene.x.shape[3] * s
    return (min(int(yx[0] * s / stride), out_h - 1), min(int(yx[1] * s / stride), out_w - 1))


def _out_to_image(scene, index):
    """Output-pixel coordinate (float) -> image coordinate of that pixel's centre."""
    return (np.asarray(index, dtype=np.float64) + 0.5) * scene.stride / scene.scale_factor


def plot_dlu_offsets(scene, path, dpi, max_arrows=40):
    found = scene.find('DLU')
    fig, ax = plt.subplots(figsize=figure_size('dlu_offsets'), dpi=dpi)
    _show_image(ax, scene)
    if found is None:
        ax.set_title('no DLU in this comparison')
    else:
        label, module, state = found
        _, calls = scene.run(label)
        offsets = next(args[2] for op, args in calls if op == 'guided_reassemble')
        dx, dy = offsets[0, 0].numpy(), offsets[0, 1].numpy()  # group 0, low-res pixels
        step = max(1, math.ceil(max(dx.shape) / max_arrows))
        rows = np.arange(0, dx.shape[0], step)
        cols = np.arange(0, dx.shape[1], step)
        yy, xx = np.meshgrid(_out_to_image(scene, rows), _out_to_image(scene, cols), indexing='ij')
        peak = float(np.hypot(dx, dy).max())
        # tiny offsets (e.g. an untrained model) would be invisible: stretch the arrows so the
        # longest spans ~1.5 grid steps, and say so in the title
        spacing = step * scene.stride / scene.scale_factor
        stretch = max(1.0, np.ceil(1.5 * spacing / (peak * scene.stride))) if peak > 0 else 1.0
        u = dx[np.ix_(rows, cols)] * scene.stride * stretch  # low-res pixels -> image pixels
        v = dy[np.ix_(rows, cols)] * scene.stride * stretch
        magnitude = np.hypot(dx, dy)[np.ix_(rows, cols)]
        arrows = ax.quiver(xx, yy, u, v, magnitude, angles='xy', scale_units='xy', scale=1,
                           cmap='viridis', width=0.004)
        cbar = fig.colorbar(arrows, ax=ax, fraction=0.046, pad=0.02)
        cbar.set_label('|offset| in low-res pixels')
        ax.set_title(f'{label} guidance offsets (group 0), s={scene.scale_factor}, '
                     f'max |offset| {peak:.2f} low-res px'
                     + (f', arrows drawn {stretch:.0f}x longer' if stretch > 1 else '')
                     + f'\n{state}'
                     + ('\nall offsets are 0: nothing to draw' if peak == 0 else ''),
                     fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_lda_points(scene, path, dpi, pixels):
    found = scene.find('LDAAQU')
    fig, ax = plt.subplots(figsize=figure_size('lda_aqu_points'), dpi=dpi)
    _show_image(ax, scene)
    if found is None:
        ax.set_title('no LDA-AQU in this comparison')
    else:
        label, module, state = found
        _, calls = scene.run(label)
        offsets = next(args[3] for op, args in calls if op == 'local_deformable_attention')
        groups, points = module.groups, module.k_u ** 2
        offsets = offsets[0].reshape(groups, points, 2, *offsets.shape[2:]).numpy()
        colours = plt.cm.tab10(np.arange(len(pixels)) % 10)
        for p, (yx, colour) in enumerate(zip(pixels, colours)):
            i, j = _output_pixel(scene, yx)
            query = _out_to_image(scene, (i, j))
            for g in range(groups):
                ys = _out_to_image(scene, i + offsets[g, :, 0, i, j])
                xs = _out_to_image(scene, j + offsets[g, :, 1, i, j])
                for y, x in zip(ys, xs):
                    ax.plot([query[1], x], [query[0], y], color=colour, lw=0.6, alpha=0.6)
                ax.scatter(xs, ys, color=colour, marker=MARKERS[g % len(MARKERS)], s=28,
                           edgecolors='k', linewidths=0.5,
                           label=f'pixel {p + 1}, group {g}')
            ax.scatter([query[1]], [query[0]], color=colour, marker='*', s=160,
                       edgecolors='k', linewidths=0.8)
        ax.legend(fontsize=7, loc='lower right', framealpha=0.8)
        ax.set_title(f'{label}: {points} sampling points per group (markers) of {len(pixels)} '
                     f'output pixels (stars), s={scene.scale_factor}\n{state}', fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _kernels_of(scene, label, module):
    """(G*k*k, sH, sW) reassembly kernels a CARAFE / DLU module used, and k."""
    _, calls = scene.run(label)
    for op, args in calls:
        if op == 'reassemble':
            return args[1][0], args[2]
        if op == 'guided_reassemble':
            x, kernel_space, offsets, k, groups, s = args
            return sample_kernel_space(kernel_space, offsets, groups, s)[0], k
    raise ValueError(f'{label} made no reassembly call')


def plot_kernels(scene, path, dpi, pixels):
    rows = [found for found in (scene.find('CARAFE'), scene.find('DLU')) if found]
    fig = plt.figure(figsize=figure_size('kernels', len(pixels)), dpi=dpi)
    grid = fig.add_gridspec(max(len(rows), 1), len(pixels) + 1,
                            width_ratios=[1.6] + [1] * len(pixels))
    ax = fig.add_subplot(grid[:, 0])
    _show_image(ax, scene)
    for p, yx in enumerate(pixels):
        centre = _out_to_image(scene, _output_pixel(scene, yx))
        ax.scatter([centre[1]], [centre[0]], marker='+', s=120, color='w', linewidths=2)
        ax.annotate(str(p + 1), (centre[1], centre[0]), color='w', fontsize=11,
                    xytext=(5, -5), textcoords='offset points', fontweight='bold')
    ax.set_title('output pixels', fontsize=9)
    states = set()
    for r, (label, module, state) in enumerate(rows):
        kernels, k = _kernels_of(scene, label, module)
        states.add(state)
        shown = [kernels[:k * k, i, j].reshape(k, k).numpy()  # group 0
                 for i, j in (_output_pixel(scene, yx) for yx in pixels)]
        vmax = max(float(kernel.max()) for kernel in shown)  # one colour scale per row
        for p, kernel in enumerate(shown):
            kax = fig.add_subplot(grid[r, p + 1])
            kax.imshow(kernel, cmap='magma', vmin=0, vmax=vmax)
            for (a, b), value in np.ndenumerate(kernel):
                kax.text(b, a, f'{value:.2f}', ha='center', va='center', fontsize=6,
                         color='w' if value < 0.6 * vmax else 'k')
            kax.set_xticks([])
            kax.set_yticks([])
            kax.set_title(f'{label}, pixel {p + 1}', fontsize=8)
    fig.suptitle('k x k reassembly kernels (group 0) over the parent\'s low-res window, '
                 f's={scene.scale_factor}\n' + '; '.join(sorted(states)), fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _pca_rgb(feature, basis, mean, lo, hi):
    c = feature.shape[1]
    flat = feature[0].reshape(c, -1).T.numpy() - mean  # (pixels, C)
    rgb = (flat @ basis - lo) / (hi - lo)
    return np.clip(rgb, 0, 1).reshape(*feature.shape[2:], 3)


def plot_feature_maps(scene, path, dpi):
    labels = list(scene.modules)
    rows = math.ceil((len(labels) + 1) / FEATURE_COLUMNS)
    fig, axes = plt.subplots(rows, min(len(labels) + 1, FEATURE_COLUMNS), dpi=dpi, squeeze=False,
                             figsize=figure_size('feature_maps', num_upsamplers=len(labels)))
    axes = axes.ravel()
    for ax in axes[len(labels) + 1:]:
        ax.axis('off')
    c = scene.x.shape[1]
    flat = scene.x[0].reshape(c, -1).T.numpy()
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:3].T  # (C, 3): the input's 3 principal components, the same for every panel
    projected = (flat - mean) @ basis
    lo, hi = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    panels = [('input', scene.x)] + [(label, scene.run(label)[0]) for label in labels]
    states = {state for _, state in scene.modules.values()}
    for ax, (label, feature) in zip(axes, panels):
        ax.imshow(_pca_rgb(feature, basis, mean, lo, hi), interpolation='nearest')
        ax.set_title(f'{label}\n{feature.shape[2]} x {feature.shape[3]}', fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f'{c}-channel feature, its 3 principal components as RGB, upsampled '
                 f'{scene.scale_factor}x\n' + '; '.join(sorted(states)), fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
def default_pixels(height, width):
    """A pixel on the disc's rim, one at the square's corner, one on the background."""
    return [(0.32 * height, 0.13 * width), (0.5 * height, 0.55 * width),
            (0.2 * height, 0.75 * width)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--image', help='image file (default: a generated test image)')
    parser.add_argument('--size', type=int, default=256, help='generated image size')
    parser.add_argument('--config', help='dlu_mm detection / segmentation config')
    parser.add_argument('--checkpoint', help='weights for --config (else random init)')
    parser.add_argument('--layer', help='module name of the upsampler to show (with --config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='(with --config) override config settings, xxx=yyy')
    parser.add_argument('--upsamplers', nargs='+', default=list(DEFAULT_COMPARE),
                        help='upsampler types to compare')
    parser.add_argument('--channels', type=int, default=64, help='C of the generated feature')
    parser.add_argument('--stride', type=int, default=8,
                        help='image pixels per feature pixel of the generated feature')
    parser.add_argument('--scale-factor', type=int, default=2)
    parser.add_argument('--perturb', type=float, default=0.3,
                        help='conv noise gain for random-init upsamplers (0 = their own init)')
    parser.add_argument('--pixels', type=float, nargs='+',
                        help='Y X [Y X ...] image pixels for the kernel / point figures')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-dir', default='work_dirs/visualize_upsampler')
    args = parser.parse_args(argv)
    if args.pixels is not None and (len(args.pixels) % 2 or not args.pixels):
        parser.error('--pixels takes pairs Y X')
    if args.checkpoint and not args.config:
        parser.error('--checkpoint needs --config')
    return args


def main(argv=None):
    args = parse_args(argv)
    image = load_image(args.image) if args.image else synthetic_image(args.size)
    height, width = image.shape[:2]
    if args.config:
        scene = model_scene(image, args.config, args.checkpoint, args.layer, args.upsamplers,
                            args.perturb, args.seed, args.cfg_options)
    else:
        scene = random_scene(image, args.upsamplers, args.channels, args.stride,
                             args.scale_factor, args.perturb, args.seed)
    pixels = (list(zip(args.pixels[::2], args.pixels[1::2])) if args.pixels
              else default_pixels(height, width))
    os.makedirs(args.out_dir, exist_ok=True)
    paths = {name: os.path.join(args.out_dir, f'{name}.png') for name in FIGURES}
    plot_dlu_offsets(scene, paths['dlu_offsets'], args.dpi)
    plot_lda_points(scene, paths['lda_aqu_points'], args.dpi, pixels)
    plot_kernels(scene, paths['kernels'], args.dpi, pixels)
    plot_feature_maps(scene, paths['feature_maps'], args.dpi)
    for path in paths.values():
        print(path)
    return paths, scene, pixels


if __name__ == '__main__':
    main()
