# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.

from __future__ import annotations

from .baselines import Baseline, gaussian_blur, make_baseline
from .enums import CAMTarget, RegionKind
from .inversion import find_invertd, invert_like
from .loading import LoadedModel, first_conv_in_channels, load_bundle, load_checkpoint, load_network
from .postprocessing import applies_sigmoid

__all__ = [
    "CAMTarget",
    "RegionKind",
    "Baseline",
    "make_baseline",
    "gaussian_blur",
    "applies_sigmoid",
    "find_invertd",
    "invert_like",
    "LoadedModel",
    "load_bundle",
    "load_checkpoint",
    "load_network",
    "first_conv_in_channels",
]
