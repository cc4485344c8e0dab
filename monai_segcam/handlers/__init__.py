# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Ignite handlers: Seg-CAMs during evaluation and validation (:py:class:`SegCAMHandler`), and the copy of a
:py:class:`~monai_segcam.inferers.SegCAMInferer`'s CAM into the engine output (:py:class:`SegCAMOutputHandler`), and
a browser review report of the explained cases (:py:class:`SegCAMReportHandler`)."""

from __future__ import annotations

from .cam_output import SegCAMOutputHandler, cam_output_keys
from .report_handler import SegCAMReportHandler
from .segcam_handler import CSV_COLUMNS, STAT_COLUMNS, OnError, SegCAMHandler

__all__ = [
    "SegCAMHandler",
    "SegCAMReportHandler",
    "SegCAMOutputHandler",
    "OnError",
    "CSV_COLUMNS",
    "STAT_COLUMNS",
    "cam_output_keys",
]
