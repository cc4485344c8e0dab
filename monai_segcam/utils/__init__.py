# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.

from __future__ import annotations

from .enums import CAMMethod, CAMTarget, RegionKind
from .inversion import find_invertd, invert_like
from .postprocessing import applies_sigmoid

__all__ = ["CAMMethod", "CAMTarget", "RegionKind", "applies_sigmoid", "find_invertd", "invert_like"]
