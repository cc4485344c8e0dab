# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Review reports in the browser: find the cases where the model looked elsewhere, then look at them in 3D.

:py:class:`SegCAMReport` takes cases one at a time (image, segmentation, CAMs, statistics rows, label) and writes
``index.html`` (a sortable, filterable table with thumbnails, Dice and CAM statistics, flagged cases marked) and a
page per case with a 3D viewer, all working offline from ``file://``. Front doors:
:py:class:`~monai_segcam.handlers.SegCAMReportHandler` (Ignite), ``monai-segcam explain --report``
(:py:func:`report_from_explain_output`) and the demo bundle.
"""

from __future__ import annotations

from .stats import DEFAULT_FLAG_THRESHOLD
from .writer import SegCAMReport, cams_from_layers, report_size

__all__ = ["SegCAMReport", "cams_from_layers", "report_size", "DEFAULT_FLAG_THRESHOLD"]
