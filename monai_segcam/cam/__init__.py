# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM engines: layers, activation capture, regions, rules, and the whole-volume / sliding-window engines."""

from __future__ import annotations

from . import regions
from .base import CAMEngine, Explainer
from .capture import ActivationCapture
from .layers import (
    INPUT_LAYER,
    LayerInfo,
    LayerTable,
    ResolvedLayer,
    UnknownLayerError,
    layer_presets,
    list_layers,
    resolve_layers,
    unwrap_network,
)
from .methods import CAMRule, get_rule, method_names, register_method
from .normalize import normalize_cam
from .prompts import PromptedVista3D, Vista3DSegCAM, is_vista3d, parse_prompt, point_windows
from .regions import *  # noqa: F403 (the names of regions.__all__, exported below)
from .result import CAMResult
from .roles import LayerDiscoveryError, LayerRoles, discover_roles
from .scorecam import ScoreCAMRule
from .segcam import SegCAM
from .selection import select_logits
from .sliding_window import SlidingWindowSegCAM
from .terms import TermCapture, Terms, WindowPlace, mirror_flips, term_gradients, window_arguments
from .windows import GridFactory, WindowedEngine, WindowGrid, WindowSettings, inferer_window_settings, window_slices

# isort: split
# the input attributions register after the CAM rules (the order of the method names, e.g. the CLI's --method)
from .attributions import (
    GradientRule,
    InputAttributionRule,
    InputPoints,
    InputXGradientRule,
    IntegratedGradientsRule,
    Quadrature,
    SmoothGradRule,
    quadrature_rule,
)

__all__ = [
    "Explainer",
    "CAMEngine",
    "CAMResult",
    "SegCAM",
    "SlidingWindowSegCAM",
    "Vista3DSegCAM",
    "PromptedVista3D",
    "point_windows",
    "is_vista3d",
    "parse_prompt",
    "WindowGrid",
    "GridFactory",
    "WindowSettings",
    "WindowedEngine",
    "window_slices",
    "inferer_window_settings",
    "Terms",
    "TermCapture",
    "mirror_flips",
    "term_gradients",
    "window_arguments",
    "WindowPlace",
    "ActivationCapture",
    "LayerInfo",
    "LayerTable",
    "ResolvedLayer",
    "layer_presets",
    "list_layers",
    "UnknownLayerError",
    "resolve_layers",
    "unwrap_network",
    "discover_roles",
    "LayerRoles",
    "LayerDiscoveryError",
    "select_logits",
    "CAMRule",
    "ScoreCAMRule",
    "InputAttributionRule",
    "GradientRule",
    "InputXGradientRule",
    "SmoothGradRule",
    "IntegratedGradientsRule",
    "InputPoints",
    "Quadrature",
    "quadrature_rule",
    "INPUT_LAYER",
    "get_rule",
    "method_names",
    "register_method",
    "normalize_cam",
]
__all__ += regions.__all__
