# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``--region`` of ``explain`` (a region string, :py:func:`~monai_segcam.cam.regions.parse_region`): placing voxels
and boxes of the input file on the network grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..cam.regions import LABEL_REGIONS, Box, Voxel, as_region, parse_region
from .io import CLIError

__all__ = ["LABEL_REGIONS", "parse_region", "grid_region"]


def grid_region(
    text: str, shape: Sequence[int], grid: Sequence[int], to_grid: Callable[[np.ndarray], np.ndarray]
) -> tuple[Any, dict[str, Any]]:
    """The region object of ``--region text`` for the engines, and its description for the JSON summary.

    A ``voxel`` or ``box`` is given on the input file's grid (``shape``) and moved onto the network grid (``grid``)
    by ``to_grid`` (file voxels ``(N, D)`` -> continuous network-grid voxels ``(N, D)``; a front door's
    preprocessing may reorient, crop and resample): the voxel nearest to the same position, and the smallest box
    holding the nearest voxels of the corners.

    Example:
        .. code-block:: python

            region, summary = grid_region("voxel:5,7,9", (64, 64, 40), (32, 32, 20), lambda points: points / 2)
    """
    kind, points = parse_region(text)
    if kind not in ("voxel", "box"):
        return as_region(text) if kind == "component" else kind, {"kind": kind}
    for point in points:
        if len(point) != len(shape) or any(not 0 <= i < s for i, s in zip(point, shape)):
            raise CLIError(f"--region {kind}: voxel {point} lies outside the image (shape {tuple(shape)})")
    corners = np.array(np.meshgrid(*[sorted({p[d] for p in points}) for d in range(len(shape))], indexing="ij"))
    mapped = np.rint(to_grid(corners.reshape(len(shape), -1).T.astype(np.float64)))
    last = np.array(grid) - 1
    start, end = np.clip(mapped.min(0), 0, last).astype(int), np.clip(mapped.max(0), 0, last).astype(int) + 1
    if kind == "voxel":
        return Voxel(tuple(start.tolist())), {"kind": kind, "input_voxel": list(points[0]), "voxel": start.tolist()}
    description = {"kind": kind, "input_corners": [list(p) for p in points], "start": start.tolist()}
    return Box(tuple(start.tolist()), tuple(end.tolist())), {**description, "end": end.tolist()}
