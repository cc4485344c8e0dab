# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""String options of the package, validated with :py:func:`monai.utils.look_up_option`."""

from __future__ import annotations

from monai.utils.enums import StrEnum

__all__ = ["CAMMethod", "CAMTarget", "RegionKind"]


class CAMMethod(StrEnum):
    """The CAM rules (segmentation forms, see ``DESIGN.md``)."""

    GRADCAM = "gradcam"
    HIRESCAM = "hirescam"
    XRESCAM = "xrescam"
    GRADCAMPP = "gradcampp"
    XGRADCAM = "xgradcam"
    LAYERCAM = "layercam"
    EIGENCAM = "eigencam"
    SCORECAM = "scorecam"


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
