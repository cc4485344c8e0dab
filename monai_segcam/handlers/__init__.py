# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Ignite handlers, split the MONAI way: :py:class:`SegCAMComputeHandler` (CAMs into ``engine.state.output``),
:py:class:`SegCAMSaver` (files), :py:class:`SegCAMStatsHandler` (the statistics CSV, rank-aware),
:py:class:`SegCAMTensorBoardHandler`, their composition :py:class:`SegCAMHandler` used by the bundles, the copy of a
:py:class:`~monai_segcam.inferers.SegCAMInferer`'s CAM into the engine output (:py:class:`SegCAMOutputHandler`), and
a browser review report of the explained cases (:py:class:`SegCAMReportHandler`)."""

from __future__ import annotations

from ..metrics import STAT_COLUMNS
from ..outputs import CSV_COLUMNS
from .cam_output import SegCAMOutputHandler
from .compute import CAMCase, OnError, SegCAMComputeHandler
from .report_handler import SegCAMReportHandler
from .saver import SegCAMSaver
from .segcam_handler import SegCAMHandler
from .statistics import SegCAMStatsHandler
from .tensorboard import SegCAMTensorBoardHandler

__all__ = [
    "SegCAMHandler",
    "SegCAMComputeHandler",
    "SegCAMSaver",
    "SegCAMStatsHandler",
    "SegCAMTensorBoardHandler",
    "SegCAMReportHandler",
    "SegCAMOutputHandler",
    "CAMCase",
    "OnError",
    "CSV_COLUMNS",
    "STAT_COLUMNS",
]
