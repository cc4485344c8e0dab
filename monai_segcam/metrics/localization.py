# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Localisation metrics: how much of a CAM falls inside a reference mask.

All functions take ``cam`` (B, 1 or N, *spatial) and ``mask`` (B, 1 or N, *spatial), broadcast a single
channel against N channels, compute on the inputs' device and return a float tensor of shape (B, N).
Non-boolean masks are binarised with ``mask > 0.5`` (labels in {0, 1}, one-hot masks, probabilities).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["relevance_mass", "pointing_game", "topk_iou"]


def _flatten_pair(cam: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes, broadcast channels and return ``cam`` (float) and ``mask`` (bool) as (B, N, V)."""
    if cam.ndim < 3:
        raise ValueError(f"cam must be (B, C, *spatial) with at least one spatial dim, got shape {tuple(cam.shape)}.")
    if mask.ndim != cam.ndim:
        raise ValueError(
            f"cam and mask must have the same number of dims, got {tuple(cam.shape)} and {tuple(mask.shape)}."
        )
    if cam.shape[0] != mask.shape[0] or cam.shape[2:] != mask.shape[2:]:
        raise ValueError(
            f"cam and mask must share batch and spatial shape, got {tuple(cam.shape)} and {tuple(mask.shape)}."
        )
    c_cam, c_mask = cam.shape[1], mask.shape[1]
    if c_cam != c_mask and 1 not in (c_cam, c_mask):
        raise ValueError(f"cam and mask channels must be equal or one of them 1, got {c_cam} and {c_mask}.")
    mask = mask.to(cam.device)
    mask = mask if mask.dtype == torch.bool else mask > 0.5
    n = max(c_cam, c_mask)
    cam = cam.expand(-1, n, *cam.shape[2:]) if c_cam != n else cam
    mask = mask.expand(-1, n, *mask.shape[2:]) if c_mask != n else mask
    cam = cam if cam.is_floating_point() else cam.float()
    return cam.reshape(cam.shape[0], n, -1), mask.reshape(mask.shape[0], n, -1)


def relevance_mass(cam: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (relevance mass accuracy): the share of the CAM's positive energy inside the mask.

    ``sum(relu(cam) * mask) / sum(relu(cam))`` per sample and channel (Wang et al. 2020, Score-CAM; Arras et al.
    2022, "relevance mass accuracy"). A map without positive energy scores 0 and a warning is issued; the result
    is never NaN.

    Args:
        cam: (B, 1 or N, *spatial) map.
        mask: (B, 1 or N, *spatial) reference region, boolean or binarised with ``mask > 0.5``.

    Returns:
        (B, N) float tensor in [0, 1].

    .. code-block:: python

        cam = torch.rand(2, 1, 32, 32, 32)
        label = torch.rand(2, 1, 32, 32, 32) > 0.9
        relevance_mass(cam, label)  # (2, 1), about 0.1 for a random map
    """
    cam, mask = _flatten_pair(cam, mask)
    energy = cam.clamp(min=0)
    total = energy.sum(-1)
    inside = (energy * mask).sum(-1)
    empty = total <= 0
    if empty.any():
        warnings.warn(f"relevance_mass: {int(empty.sum())} map(s) without positive energy score 0.", stacklevel=2)
    return torch.where(empty, torch.zeros_like(total), inside / total.masked_fill(empty, 1.0))


def _dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Chebyshev dilation of a boolean (B, N, *spatial) mask by ``tolerance`` voxels (max-pooling)."""
    spatial_dims = mask.ndim - 2
    if spatial_dims > 3:
        raise ValueError(f"pointing_game with tolerance supports 1 to 3 spatial dims, got {spatial_dims}.")
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial_dims - 1]
    return pool(mask.float(), kernel_size=2 * tolerance + 1, stride=1, padding=tolerance) > 0


def pointing_game(cam: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al. 2018): 1.0 if the CAM's peak lies in the mask dilated by ``tolerance`` voxels.

    The dilation is a max-pooling with a cubic kernel of side ``2 * tolerance + 1``. With several voxels at the
    peak value a hit by any of them counts. A constant map has no peak: it scores 0 and a warning is issued.

    Args:
        cam: (B, 1 or N, *spatial) map.
        mask: (B, 1 or N, *spatial) reference region, boolean or binarised with ``mask > 0.5``.
        tolerance: dilation radius in voxels (>= 0).

    Returns:
        (B, N) float tensor of 0.0 / 1.0.

    .. code-block:: python

        cam = torch.zeros(1, 1, 8, 8, 8)
        cam[0, 0, 2, 2, 2] = 1.0
        mask = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
        mask[0, 0, 3, 3, 3] = True
        pointing_game(cam, mask)  # tensor([[0.]])
        pointing_game(cam, mask, tolerance=1)  # tensor([[1.]])
    """
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer, got {tolerance}.")
    flat_cam, flat_mask = _flatten_pair(cam, mask)
    if tolerance > 0:
        spatial = cam.shape[2:]
        flat_mask = _dilate(flat_mask.reshape(*flat_mask.shape[:2], *spatial), int(tolerance)).flatten(2)
    peak = flat_cam.amax(-1, keepdim=True)
    constant = flat_cam.amin(-1) == peak[..., 0]
    if constant.any():
        warnings.warn(f"pointing_game: {int(constant.sum())} constant map(s) without a peak score 0.", stacklevel=2)
    hit = ((flat_cam == peak) & flat_mask).any(-1) & ~constant
    return hit.to(flat_cam.dtype)


def topk_iou(cam: torch.Tensor, mask: torch.Tensor, k: float | str = 0.05) -> torch.Tensor:
    """IoU between the top-k CAM voxels and the mask.

    The top-k set holds the ``round(k * V)`` highest-valued voxels of each map (at least one), or, with
    ``k="mask"``, as many voxels as the mask has, so that a map equal to the mask scores 1. Ties at the threshold
    are broken by :func:`torch.topk`. An empty mask with ``k="mask"`` scores 0 and a warning is issued.

    Args:
        cam: (B, 1 or N, *spatial) map.
        mask: (B, 1 or N, *spatial) reference region, boolean or binarised with ``mask > 0.5``.
        k: fraction of voxels in (0, 1], or ``"mask"``.

    Returns:
        (B, N) float tensor in [0, 1].

    .. code-block:: python

        label = torch.rand(1, 1, 32, 32, 32) > 0.9
        topk_iou(label.float(), label, k="mask")  # tensor([[1.]])
    """
    flat_cam, flat_mask = _flatten_pair(cam, mask)
    n_vox = flat_cam.shape[-1]
    mask_sizes = flat_mask.sum(-1)
    if isinstance(k, str):
        if k != "mask":
            raise ValueError(f'k must be a fraction in (0, 1] or "mask", got "{k}".')
        counts = mask_sizes
        if (counts == 0).any():
            warnings.warn(f'topk_iou: {int((counts == 0).sum())} empty mask(s) with k="mask" score 0.', stacklevel=2)
    else:
        if not 0 < k <= 1:
            raise ValueError(f"k must be a fraction in (0, 1], got {k}.")
        counts = torch.full_like(mask_sizes, max(1, round(k * n_vox)))
    rows_cam, rows_mask = flat_cam.reshape(-1, n_vox), flat_mask.reshape(-1, n_vox)
    inter = torch.zeros(rows_cam.shape[0], device=flat_cam.device, dtype=flat_cam.dtype)
    for i, count in enumerate(counts.flatten().tolist()):
        if count > 0:
            idx = rows_cam[i].topk(count).indices
            inter[i] = rows_mask[i, idx].sum()
    inter = inter.reshape(counts.shape)
    union = counts + mask_sizes - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
