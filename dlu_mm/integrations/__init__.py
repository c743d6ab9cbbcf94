"""dlu_mm in frameworks other than OpenMMLab, one module per framework.

Each module imports its framework lazily and only when imported itself:

- :mod:`dlu_mm.integrations.ultralytics`: the upsamplers as layers of ultralytics YOLO model
  YAMLs (``import dlu_mm.integrations.ultralytics`` registers them).
"""
