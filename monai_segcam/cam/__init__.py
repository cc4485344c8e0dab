# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM engines: layers, activation capture, regions, rules, and the whole-volume / sliding-window engines."""

from __future__ import annotations

from .capture import ActivationCapture
from .layers import LayerInfo, LayerTable, ResolvedLayer, layer_presets, list_layers, resolve_layers, unwrap_network
from .methods import CAMRule, get_rule
from .normalize import normalize_cam
from .regions import (
    Box,
    Component,
    EmptyRegion,
    FalseNegativeRegion,
    FalsePositiveRegion,
    LabelRegion,
    MaskRegion,
    PredictedRegion,
    Region,
    Voxel,
    WholeRegion,
    class_masks,
    region_cotangent,
    region_weights,
)
from .roles import LayerDiscoveryError, LayerRoles, discover_roles
from .selection import select_logits
from .segcam import SegCAM
from .sliding_window import SlidingWindowSegCAM, window_slices

__all__ = [
    "SegCAM",
    "SlidingWindowSegCAM",
    "window_slices",
    "ActivationCapture",
    "LayerInfo",
    "LayerTable",
    "ResolvedLayer",
    "layer_presets",
    "list_layers",
    "resolve_layers",
    "unwrap_network",
    "discover_roles",
    "LayerRoles",
    "LayerDiscoveryError",
    "select_logits",
    "CAMRule",
    "get_rule",
    "normalize_cam",
    "Region",
    "PredictedRegion",
    "WholeRegion",
    "EmptyRegion",
    "MaskRegion",
    "LabelRegion",
    "FalsePositiveRegion",
    "FalseNegativeRegion",
    "Voxel",
    "Box",
    "Component",
    "class_masks",
    "region_cotangent",
    "region_weights",
]
