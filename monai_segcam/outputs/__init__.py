# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The one output layer of every front door (handlers, transforms, command line): names (:py:mod:`.names`), atomic
files (:py:mod:`.files`), the writer of NIfTI maps and PNG views (:py:mod:`.writer`) and the statistics table
(:py:mod:`.table`). The statistics themselves are :py:func:`monai_segcam.metrics.cam_statistics`."""

from __future__ import annotations

from .files import atomic_output, remove_stale_temporaries, safe_path
from .geometry import check_cam_geometry
from .names import (
    CaseNamer,
    cam_file_name,
    cam_keys,
    cam_output_keys,
    epoch_folder,
    panel_file_name,
    safe_case_name,
    safe_token,
    segmentation_file_name,
    source_meta,
)
from .table import (
    CSV_COLUMNS,
    StatsTable,
    case_rows,
    merge_rows,
    read_table,
    row_key,
    summary_rows,
    table_rows,
    write_table,
)
from .writer import CAMWriter, write_nifti, write_png, write_text

__all__ = [
    "safe_token",
    "safe_case_name",
    "CaseNamer",
    "cam_file_name",
    "panel_file_name",
    "segmentation_file_name",
    "epoch_folder",
    "source_meta",
    "cam_output_keys",
    "cam_keys",
    "safe_path",
    "atomic_output",
    "remove_stale_temporaries",
    "check_cam_geometry",
    "write_nifti",
    "write_png",
    "write_text",
    "CAMWriter",
    "CSV_COLUMNS",
    "table_rows",
    "case_rows",
    "row_key",
    "merge_rows",
    "summary_rows",
    "read_table",
    "write_table",
    "StatsTable",
]
