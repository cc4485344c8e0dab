# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``--region`` of ``explain``: parsing it, and placing voxels and boxes of the input file on the network grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .io import CLIError

__all__ = ["LABEL_REGIONS", "parse_region", "grid_region"]

LABEL_REGIONS = ("label", "fp", "fn")
_REGIONS = ("pred", "all", "empty", "label", "fp", "fn", "component")
_REGION_FORMS = "component:N, voxel:I,J,K or box:I0,J0,K0:I1,J1,K1"


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of voxel indices") from None


def parse_region(text: str) -> tuple[str, list[tuple[int, ...]]]:
    """Parse a ``--region`` value into its kind and its voxel-index arguments.

    Kinds: ``pred``, ``all``, ``empty``, ``label``, ``fp``, ``fn``, ``component[:N]`` (the N-th largest component,
    0 = largest), ``voxel:I,J,K`` (one voxel) and ``box:I0,J0,K0:I1,J1,K1`` (two opposite corner voxels, both
    included); voxel indices are those of the input file, in the order nibabel and MONAI read them.

    Example:
        >>> parse_region("box:4,5,3:10,12,8")
        ('box', [(4, 5, 3), (10, 12, 8)])
    """
    kind, *parts = text.split(":")
    if kind == "component" and len(parts) <= 1 and all(p.isdigit() for p in parts):
        return kind, [(int(parts[0]),)] if parts else []
    if kind in _REGIONS and kind != "component" and not parts:
        return kind, []
    if kind in ("voxel", "box") and len(parts) == (1 if kind == "voxel" else 2):
        points = [_indices(part) for part in parts]
        if any(len(point) != len(points[0]) for point in points):
            raise ValueError(f"{text!r}: both corners need the same number of indices")
        return kind, points
    raise ValueError(f"unknown region {text!r}: use one of {', '.join(_REGIONS)}, or {_REGION_FORMS}")


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
    from monai_segcam.cam import Box, Component, Voxel

    kind, points = parse_region(text)
    if kind == "component":
        return Component(index=points[0][0] if points else 0), {"kind": kind}
    if kind not in ("voxel", "box"):
        return kind, {"kind": kind}
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
