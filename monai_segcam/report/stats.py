# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The numbers of a review report: Dice per class, the CAM statistics of each map, and which maps are flagged.

The statistics have the columns of the handler's CSV (:py:data:`~monai_segcam.handlers.segcam_handler.STAT_COLUMNS`).
Rows given by the caller (e.g. :py:attr:`SegCAMHandler.rows <monai_segcam.handlers.SegCAMHandler>`, computed on the
network grid with the explained region) take precedence; for maps without a row the report computes them itself on
its own grid, with the segmentation's voxels of the class as the explained region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..handlers.segcam_handler import STAT_COLUMNS

__all__ = ["DEFAULT_FLAG_THRESHOLD", "dice", "map_statistics", "merge_rows", "is_flagged", "finite_or_none"]

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
    """The handler's statistics of one map ``(X, Y, Z)`` with boolean ``region`` and ``label`` masks.

    Relevance mass is the share of the map's positive mass inside a mask (``None`` for a map without positive
    mass); the pointing game is 1 when the map's maximum lies inside the label.

    Example:
        >>> map_statistics(np.array([[[1.0, 3.0]]]), np.array([[[True, False]]]), None)["relevance_mass_region"]
        0.25
    """
    cam = np.nan_to_num(cam.astype(np.float64))
    positive = np.clip(cam, 0, None)
    mass = float(positive.sum())
    stats: dict[str, float | None] = dict.fromkeys(STAT_COLUMNS)
    stats.update(max=float(cam.max()), mean=float(cam.mean()), std=float(cam.std()))
    if region is not None:
        stats["region_voxels"] = float(region.sum())
        stats["relevance_mass_region"] = float(positive[region].sum()) / mass if mass > 0 else None
    if label is not None:
        stats["relevance_mass_label"] = float(positive[label].sum()) / mass if mass > 0 else None
        stats["pointing_game_label"] = float(label.flat[int(np.argmax(cam))]) if mass > 0 else None
    return stats


def merge_rows(
    maps: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]] | None, case: str | None = None
) -> list[dict[str, Any]]:
    """Copy the finite statistics of matching rows (same layer, method and class; status ``ok``) into the ``maps``
    entries, which keep their own values where a row has none; rows of other cases are ignored when ``case`` is
    given.

    Example:
        .. code-block:: python

            merge_rows([{"layer": "pre_head", "method": "hirescam", "class": 1}], handler.rows, case="image000")
    """
    by_key = {}
    for row in rows or ():
        if str(row.get("status", "ok")) != "ok" or (case is not None and str(row.get("case", case)) != case):
            continue
        by_key[(str(row.get("layer")), str(row.get("method")), str(row.get("class")))] = row
    for entry in maps:
        row = by_key.get((str(entry["layer"]), str(entry["method"]), str(entry["class"])))
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
