# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Perturbation baselines for segmentation: occlusion of the region score and attribution to input channels, exact
through MONAI's stitched sliding-window prediction."""

from __future__ import annotations

from ..utils.baselines import Baseline, make_baseline
from .base import StitchedExplainer
from .channels import (
    CHANNEL_COLUMNS,
    ChannelAttribution,
    ChannelAttributionResult,
    ChannelMethod,
    channel_names,
)
from .occlusion import SegOcclusion, occluder_boxes
from .scoring import Perturbation, StitchedScorer
from .windows import box_footprint, footprint_mask

__all__ = [
    "SegOcclusion",
    "occluder_boxes",
    "ChannelAttribution",
    "ChannelAttributionResult",
    "ChannelMethod",
    "CHANNEL_COLUMNS",
    "channel_names",
    "Baseline",
    "make_baseline",
    "StitchedExplainer",
    "Perturbation",
    "StitchedScorer",
    "box_footprint",
    "footprint_mask",
]
