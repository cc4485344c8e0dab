# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.

from __future__ import annotations

from .enums import CAMTarget, RegionKind
from .inversion import find_invertd, invert_like
from .postprocessing import applies_sigmoid

__all__ = ["CAMTarget", "RegionKind", "applies_sigmoid", "find_invertd", "invert_like"]
