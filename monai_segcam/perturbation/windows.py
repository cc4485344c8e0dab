# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Where a perturbed box of the image lands in the padded grid of a :py:class:`~monai_segcam.cam.WindowGrid`.

Padding is a gather applied axis by axis, so the voxels of ``pad(image)`` that take their value from a box of the
image are an outer product of one boolean line per axis: the box's line padded like the image (zeros for constant
padding, mirrored/replicated/wrapped copies otherwise). Perturbing the box changes exactly these voxels, and a window
sees the perturbation if and only if every one of its axis ranges meets the line of that axis.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import PytorchPadMode

from ..cam.windows import WindowGrid

__all__ = ["box_footprint", "footprint_mask"]


def box_footprint(box: Sequence[slice], grid: WindowGrid) -> list[torch.Tensor]:
    """Per spatial axis, which voxels of ``grid``'s padded grid take their value from ``box`` (image voxel slices).

    Example:
        .. code-block:: python

            axes = box_footprint((slice(0, 8),) * 3, grid)
            touched = [k for k, w in enumerate(grid.slices) if all(a[s].any() for a, s in zip(axes, w))]
    """
    axes = []
    n = len(grid.spatial_shape)
    constant = grid.padding_mode == PytorchPadMode.CONSTANT
    for d, (size, part) in enumerate(zip(grid.spatial_shape, box)):
        line = torch.zeros((1, 1, size))
        line[..., part] = 1.0
        before, after = grid.pad[2 * (n - 1 - d)], grid.pad[2 * (n - 1 - d) + 1]
        if before or after:
            line = F.pad(line, [before, after], mode=str(grid.padding_mode), value=0.0 if constant else None)
        axes.append(line[0, 0] > 0.5)
    return axes


def footprint_mask(axes: Sequence[torch.Tensor], window: Sequence[slice]) -> torch.Tensor | None:
    """The footprint inside ``window`` as a boolean ``(*roi)`` mask, or ``None`` when they do not meet.

    Example:
        .. code-block:: python

            mask = footprint_mask(box_footprint(box, grid), grid.slices[0])  # None, or (*roi) booleans
    """
    parts = [a[s] for a, s in zip(axes, window)]
    if not all(bool(p.any()) for p in parts):
        return None
    n = len(parts)
    shaped = [p.view(*[-1 if d == i else 1 for d in range(n)]) for i, p in enumerate(parts)]
    return functools.reduce(torch.logical_and, shaped)
