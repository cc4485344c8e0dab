# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM engines: layers, activation capture, regions, rules, and the whole-volume / sliding-window engines."""

from __future__ import annotations

from .base import CAMEngine
from .capture import ActivationCapture
from .layers import LayerInfo, LayerTable, ResolvedLayer, layer_presets, list_layers, resolve_layers, unwrap_network
from .methods import CAMRule, get_rule, method_names, register_method
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
from .result import CAMResult
from .roles import LayerDiscoveryError, LayerRoles, discover_roles
from .scorecam import ScoreCAMRule
from .segcam import SegCAM
from .selection import select_logits
from .sliding_window import SlidingWindowSegCAM
from .terms import TermCapture, Terms, mirror_flips, term_gradients
from .windows import GridFactory, WindowGrid, inferer_window_settings, window_slices

__all__ = [
    "CAMEngine",
    "CAMResult",
    "SegCAM",
    "SlidingWindowSegCAM",
    "WindowGrid",
    "GridFactory",
    "window_slices",
    "inferer_window_settings",
    "Terms",
    "TermCapture",
    "mirror_flips",
    "term_gradients",
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
    "ScoreCAMRule",
    "get_rule",
    "method_names",
    "register_method",
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
