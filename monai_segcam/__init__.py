# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Volumetric Seg-CAMs for 3D segmentation networks in MONAI.

Example:
    .. code-block:: python

        from monai_segcam import SegCAM

        cam = SegCAM(network, layers="pre_head", method="hirescam")
        result = cam(image, classes=1, region="pred")  # a CAMResult: result.map, result.region, ...

Subpackages: :py:mod:`monai_segcam.cam` (engines), :py:mod:`~monai_segcam.transforms`,
:py:mod:`~monai_segcam.perturbation` (occlusion, input channels),
:py:mod:`~monai_segcam.inferers`, :py:mod:`~monai_segcam.handlers` (Ignite), :py:mod:`~monai_segcam.metrics`
(explanation quality), :py:mod:`~monai_segcam.visualize` (pictures), :py:mod:`~monai_segcam.data` (phantoms),
:py:mod:`~monai_segcam.cli` (``monai-segcam``).
"""

from __future__ import annotations

from .cam import (
    Box,
    CAMResult,
    Component,
    SegCAM,
    SlidingWindowSegCAM,
    Voxel,
    layer_presets,
    list_layers,
    mirror_flips,
    normalize_cam,
    resolve_layers,
)
from .handlers import SegCAMHandler
from .inferers import SegCAMInferer
from .perturbation import ChannelAttribution, SegOcclusion
from .transforms import ComputeSegCAM, NormalizeSegCAMd, SegCAMd

__version__ = "0.1.0"

__all__ = [
    "SegCAM",
    "SlidingWindowSegCAM",
    "CAMResult",
    "mirror_flips",
    "SegOcclusion",
    "ChannelAttribution",
    "list_layers",
    "layer_presets",
    "resolve_layers",
    "normalize_cam",
    "Voxel",
    "Box",
    "Component",
    "ComputeSegCAM",
    "SegCAMd",
    "NormalizeSegCAMd",
    "SegCAMInferer",
    "SegCAMHandler",
]
