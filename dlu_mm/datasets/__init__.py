"""Generators of small synthetic datasets in the formats mmdet / mmseg read (COCO, ADE20K).

Import the submodule you need; this package imports nothing heavy.
"""
