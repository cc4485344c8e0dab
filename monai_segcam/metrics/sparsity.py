# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Complexity of a map (Quantus' *Complexity* category): how concentrated its relevance is.

Both scores look at the magnitudes ``a = |map|`` of the V voxels of each channel:

- :func:`sparseness`, the Gini index of ``a`` (Chalasani et al. 2020): with ``a`` sorted ascending
  ``a_(1) <= ... <= a_(V)``, ``G = sum_i (2i - V - 1) a_(i) / (V sum_i a_(i))``; 0 for a flat map, ``1 - 1/V`` for a
  single voxel (higher: sparser);
- :func:`complexity`, the entropy of the fractional contribution ``p_i = a_i / sum_j a_j`` (Bhatt et al. 2020),
  ``H = -sum_i p_i ln p_i`` in nats; ``ln V`` for a flat map, 0 for a single voxel (lower: simpler).

Quantus computes both on the absolute attribution, as here. A map of zeros has neither: it scores 0 (sparseness) and
``ln V`` (complexity, the flat map's), with a warning; never NaN.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["sparseness", "complexity"]


def _magnitudes(cam: torch.Tensor, name: str) -> torch.Tensor:
    """``|cam|`` as ``(B, N, V)`` float64."""
    cam = torch.as_tensor(cam)
    if cam.ndim < 3:
        raise ValueError(f"{name}: cam must be (B, N, *spatial), got shape {tuple(cam.shape)}.")
    return cam.detach().to(torch.float64).abs().flatten(2)


def _zero_maps(total: torch.Tensor, name: str) -> torch.Tensor:
    empty = total <= 0
    if bool(empty.any()):
        warnings.warn(f"{name}: {int(empty.sum())} map(s) of zeros (no relevance) score as a flat map.", stacklevel=3)
    return empty


def sparseness(cam: torch.Tensor) -> torch.Tensor:
    """The Gini index of each map's magnitudes (Chalasani et al. 2020; Quantus ``Sparseness``): higher is sparser.

    Args:
        cam: maps ``(B, N, *spatial)``.

    Returns:
        ``(B, N)`` float64 in ``[0, 1 - 1/V]``.

    Example:
        >>> cam = torch.zeros(1, 1, 2, 2, 1)
        >>> cam[0, 0, 0, 0, 0] = 5.0
        >>> sparseness(cam)  # one voxel of four: 1 - 1/4
        tensor([[0.7500]], dtype=torch.float64)
    """
    a = _magnitudes(cam, "sparseness").sort(-1).values
    n = a.shape[-1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=a.device) - n - 1
    total = a.sum(-1)
    empty = _zero_maps(total, "sparseness")
    return torch.where(empty, 0.0, (weights * a).sum(-1) / (n * total.masked_fill(empty, 1.0)))


def complexity(cam: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of each map's fractional contributions (Bhatt et al. 2020; Quantus ``Complexity``):
    lower is simpler.

    Args:
        cam: maps ``(B, N, *spatial)``.

    Returns:
        ``(B, N)`` float64 in ``[0, ln V]``.

    Example:
        >>> complexity(torch.ones(1, 1, 2, 2, 2))  # flat: ln 8
        tensor([[2.0794]], dtype=torch.float64)
    """
    a = _magnitudes(cam, "complexity")
    total = a.sum(-1, keepdim=True)
    empty = _zero_maps(total[..., 0], "complexity")
    p = a / total.masked_fill(total <= 0, 1.0)
    entropy = -torch.where(p > 0, p * p.clamp(min=torch.finfo(torch.float64).tiny).log(), 0.0).sum(-1)
    return torch.where(empty, math.log(a.shape[-1]), entropy)
