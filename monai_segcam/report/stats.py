# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The numbers of a review report: Dice per class, the CAM statistics of each map, and which maps are flagged.

The statistics are those of every front door (:py:func:`~monai_segcam.metrics.cam_statistics`, the columns
:py:data:`~monai_segcam.metrics.STAT_COLUMNS` of the CSV). Rows given by the caller (e.g.
:py:attr:`SegCAMHandler.rows <monai_segcam.handlers.SegCAMHandler>`, computed on the network grid with the explained
region) take precedence; for maps without a row the report computes them on its own grid, with the segmentation's
voxels of the class as the explained region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..metrics.statistics import STAT_COLUMNS, cam_statistics
from ..outputs import row_key

__all__ = ["DEFAULT_FLAG_THRESHOLD", "dice", "map_statistics", "copy_row_statistics", "is_flagged", "finite_or_none"]

DEFAULT_FLAG_THRESHOLD = 0.5
"""A map is flagged when less than this fraction of its positive mass lies inside the explained region
(``relevance_mass_region``): the evidence lies mostly outside what was segmented."""


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number, NaN or infinite (JSON has no NaN).

    Example:
        >>> finite_or_none("0.25"), finite_or_none("nan"), finite_or_none("")
        (0.25, None, None)
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def dice(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """The Dice coefficient of two boolean masks; ``None`` when both are empty.

    Example:
        >>> dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
        0.6666666666666666
    """
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return None
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def map_statistics(cam: np.ndarray, region: np.ndarray | None, label: np.ndarray | None) -> dict[str, float | None]:
    """The statistics of one map ``(X, Y, Z)`` with boolean ``region`` and ``label`` masks: those of every front door
    (:py:func:`~monai_segcam.metrics.cam_statistics`), with ``None`` for a value that does not exist (JSON has no NaN).

    Example:
        >>> map_statistics(np.array([[[1.0, 3.0]]]), np.array([[[True, False]]]), None)["relevance_mass_region"]
        0.25
    """
    masks = [None if mask is None else torch.from_numpy(np.asarray(mask, bool))[None] for mask in (region, label)]
    stats = cam_statistics(torch.from_numpy(np.nan_to_num(cam.astype(np.float64)))[None], *masks)[0]
    return {column: finite_or_none(value) for column, value in stats.items()}


def copy_row_statistics(
    maps: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]] | None, case: str | None = None
) -> list[dict[str, Any]]:
    """Copy the finite statistics of matching rows (:py:func:`~monai_segcam.outputs.row_key` without the case;
    status ``ok``) into the ``maps`` entries, which keep their own values where a row has none; rows of other cases
    are ignored when ``case`` is given.

    Example:
        .. code-block:: python

            copy_row_statistics([{"layer": "pre_head", "method": "hirescam", "class": 1}], handler.rows, "image000")
    """
    by_key = {
        row_key({"case": "", **row})[1:]: row
        for row in rows or ()
        if str(row.get("status", "ok")) == "ok" and (case is None or str(row.get("case", case)) == case)
    }
    for entry in maps:
        row = by_key.get(row_key({"case": "", **entry})[1:])
        if row is None:
            continue
        for column in STAT_COLUMNS:
            value = finite_or_none(row.get(column))
            if value is not None:
                entry[column] = value
        entry["stats_from"] = "rows"
    return maps


def is_flagged(entry: Mapping[str, Any], threshold: float) -> bool:
    """Whether a map's relevance mass in the explained region is below ``threshold`` (unknown: not flagged).

    Example:
        >>> is_flagged({"relevance_mass_region": 0.3}, 0.5), is_flagged({"relevance_mass_region": None}, 0.5)
        (True, False)
    """
    value = finite_or_none(entry.get("relevance_mass_region"))
    return value is not None and value < threshold
