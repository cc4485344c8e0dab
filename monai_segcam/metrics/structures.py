# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Answers per structure: how a map's relevance divides among the structures of a label map (an organ segmentation,
a reference label, an atlas), as a class x structure table of ``share`` and ``density``.

For a map ``m`` and the mask ``M_s`` of structure ``s`` (on the same grid):

- ``share = sum(relu(m) * M_s) / sum(relu(m))``: the part of the map's positive relevance inside ``s`` (the
  relevance mass of ``s``; the shares of all labels of a label map, background included, add up to 1);
- ``density = sum(m * M_s) / sum(M_s)``: the mean (signed) relevance per voxel of ``s``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = ["structure_masks", "structure_scores"]


def structure_masks(labels: torch.Tensor, structures: Sequence[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """The structures of an integer label map and their masks.

    Args:
        labels: a label map ``(*spatial)`` or ``(1, *spatial)`` of integer values (float values are rounded).
        structures: the label values to take, in this order; ``None``: every value present, ascending (the
            background ``0`` included, so that the shares add up to 1).

    Returns:
        the label values and their masks ``(len(values), *spatial)`` (bool).

    Example:
        >>> labels = torch.tensor([[0, 1], [2, 2]])
        >>> values, masks = structure_masks(labels)
        >>> values, masks.sum((1, 2)).tolist()
        ([0, 1, 2], [1, 1, 2])
    """
    values = torch.as_tensor(labels).detach().cpu()
    values = values.round().long() if values.is_floating_point() else values.long()
    ids = sorted(int(v) for v in torch.unique(values)) if structures is None else [int(s) for s in structures]
    if not ids:
        raise ValueError("structure_masks: no structures (an empty list was given).")
    return ids, torch.stack([values == s for s in ids])


def structure_scores(cam: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``share`` and ``density`` of each map channel in each structure (see the module's formulas), in float64.

    A map without positive relevance has share 0 in every structure and an empty structure has density 0; each
    is said once by a warning. The result is never NaN.

    Args:
        cam: the maps ``(N, *spatial)``, one channel per class.
        masks: the structures ``(S, *spatial)``, boolean or binarised with ``> 0.5``, on the map's grid.

    Returns:
        ``share`` and ``density``, each ``(N, S)``.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])
        >>> masks = torch.tensor([[[True, False], [True, False]], [[False, True], [False, True]]])
        >>> share, density = structure_scores(cam, masks)
        >>> share.tolist(), density.tolist()
        ([[0.25, 0.75]], [[-0.5, 1.5]])
    """
    cam, masks = torch.as_tensor(cam), torch.as_tensor(masks)
    if cam.ndim < 2 or masks.ndim != cam.ndim or cam.shape[1:] != masks.shape[1:]:
        raise ValueError(
            f"cam (N, *spatial) and masks (S, *spatial) must share their spatial shape, got {tuple(cam.shape)} and "
            f"{tuple(masks.shape)}: give the label map on the map's grid (e.g. both on the input file's grid)."
        )
    values = cam.detach().to(dtype=torch.float64).flatten(1)
    inside = (masks if masks.dtype == torch.bool else masks > 0.5).to(device=values.device).flatten(1).double()
    energy = values.clamp(min=0)
    total = energy.sum(1, keepdim=True)
    sizes = inside.sum(1)
    if bool((total <= 0).any()):
        warnings.warn(f"structure_scores: {int((total <= 0).sum())} map(s) without positive relevance: share 0.",
                      stacklevel=2)  # fmt: skip
    if bool((sizes == 0).any()):
        warnings.warn(f"structure_scores: {int((sizes == 0).sum())} empty structure(s): density 0.", stacklevel=2)
    share = torch.where(total > 0, energy @ inside.T / total.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    density = torch.where(sizes > 0, values @ inside.T / sizes.clamp(min=1), 0.0)
    return share, density
