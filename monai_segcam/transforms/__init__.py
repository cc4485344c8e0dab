# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Transforms computing Seg-CAMs per item (postprocessing, before ``Invertd``), saving and normalising them."""

from __future__ import annotations

from .array import ComputeSegCAM, NormalizeSegCAM
from .dictionary import (
    NormalizeSegCAMD,
    NormalizeSegCAMd,
    NormalizeSegCAMDict,
    SaveSegCAMD,
    SaveSegCAMd,
    SaveSegCAMDict,
    SegCAMD,
    SegCAMd,
    SegCAMDict,
)

__all__ = [
    "ComputeSegCAM",
    "NormalizeSegCAM",
    "SegCAMd",
    "SegCAMD",
    "SegCAMDict",
    "SaveSegCAMd",
    "SaveSegCAMD",
    "SaveSegCAMDict",
    "NormalizeSegCAMd",
    "NormalizeSegCAMD",
    "NormalizeSegCAMDict",
]
