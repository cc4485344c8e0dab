# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Placing what is given on an input file's voxel grid (a voxel, a box of a region string) on the network input's grid,
which a pipeline's preprocessing may have reoriented, cropped and resampled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..cam.regions import Box, Voxel, as_region, parse_region

__all__ = ["voxels_to_grid", "place_region"]


def voxels_to_grid(points: np.ndarray, source_affine: Any, target_affine: Any) -> np.ndarray:
    """Continuous voxel coordinates on the grid of ``target_affine`` of voxel ``points`` ``(N, D)`` of the grid of
    ``source_affine`` (both voxel-to-world), through the world position.

    Example:
        >>> voxels_to_grid(np.array([[4.0, 2.0, 0.0]]), np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([2.0, 2.0, 2.0, 1.0]))
        array([[2., 1., 0.]])
    """
    spatial = points.shape[1]
    source = np.asarray(source_affine, dtype=np.float64)
    target = np.asarray(target_affine, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ source.T @ np.linalg.inv(target).T)[:, :spatial]


def place_region(
    text: Any, shape: Sequence[int], grid: Sequence[int], to_grid: Callable[[np.ndarray], np.ndarray]
) -> tuple[Any, dict[str, Any]]:
    """The region of a region string (:py:func:`~monai_segcam.cam.regions.parse_region`) for the engines, and its
    description for a JSON summary.

    A ``voxel`` or ``box`` is given on the input file's grid (``shape``) and moved onto the network grid (``grid``)
    by ``to_grid`` (file voxels ``(N, D)`` -> continuous network-grid voxels ``(N, D)``): the voxel nearest to the
    same position, and the smallest box holding the nearest voxels of the corners. Other region strings are returned
    as the engines take them, and a region object or mask (already on the network grid) as it is.

    Raises:
        ValueError: a voxel or box corner lies outside the file's grid.

    Example:
        .. code-block:: python

            region, summary = place_region("voxel:5,7,9", (64, 64, 40), (32, 32, 20), lambda points: points / 2)
    """
    if not isinstance(text, str):
        return text, {"kind": type(text).__name__}
    kind, points = parse_region(text)
    if kind not in ("voxel", "box"):
        return as_region(text) if kind == "component" else kind, {"kind": kind}
    for point in points:
        if len(point) != len(shape) or any(not 0 <= i < s for i, s in zip(point, shape)):
            raise ValueError(f"region {kind}: voxel {point} lies outside the image (shape {tuple(shape)})")
    corners = np.array(np.meshgrid(*[sorted({p[d] for p in points}) for d in range(len(shape))], indexing="ij"))
    mapped = np.rint(to_grid(corners.reshape(len(shape), -1).T.astype(np.float64)))
    last = np.array(grid) - 1
    start, end = np.clip(mapped.min(0), 0, last).astype(int), np.clip(mapped.max(0), 0, last).astype(int) + 1
    if kind == "voxel":
        return Voxel(tuple(start.tolist())), {"kind": kind, "input_voxel": list(points[0]), "voxel": start.tolist()}
    description = {"kind": kind, "input_corners": [list(p) for p in points], "start": start.tolist()}
    return Box(tuple(start.tolist()), tuple(end.tolist())), {**description, "end": end.tolist()}
