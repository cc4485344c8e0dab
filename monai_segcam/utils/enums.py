# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""String options of the package, validated with :py:func:`monai.utils.look_up_option` (method names live in the
registry of :py:mod:`monai_segcam.cam.methods`)."""

from __future__ import annotations

from monai.utils.enums import StrEnum

__all__ = ["CAMTarget", "RegionKind"]


class CAMTarget(StrEnum):
    """What the region score sums: the network's ``logits`` or its ``probabilities``."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"


class RegionKind(StrEnum):
    """Region kinds that can be named by a string (see :py:mod:`monai_segcam.cam.regions`)."""

    PRED = "pred"
    ALL = "all"
    EMPTY = "empty"
    LABEL = "label"
    FALSE_POSITIVE = "fp"
    FALSE_NEGATIVE = "fn"
    COMPONENT = "component"
