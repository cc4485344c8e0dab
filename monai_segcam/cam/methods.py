# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""CAM rules: small pure functions of the activations ``A`` and the region-score gradients ``G = dS/dA``.

``A`` and ``G`` are ``(B, K, *s)`` tensors (K channels, spatial shape ``s``); every rule returns a raw map
``(B, 1, *s)`` before ReLU and upsampling. Rules come in two kinds, which matters for sliding windows:

- *local* rules (Seg-HiRes-Grad-CAM, Seg-XRes-CAM, LayerCAM) are element-wise in space: per-window maps add up;
- *global-weight* rules (Seg-Grad-CAM, Grad-CAM++, XGrad-CAM, Eigen-CAM) compute one weight per channel from
  window-summable statistics, then combine the activations: ``map = sum_k w_k A^k + offset``.

The segmentation forms follow Vinogradova et al. 2020 (Seg-Grad-CAM), Draelos & Carin 2020 and Rheude et al. 2024
(HiResCAM / Seg-HiRes-Grad-CAM), Hasany et al. 2023 (Seg-XRes-CAM), Chattopadhay et al. 2018 (Grad-CAM++), Fu et al.
2020 (XGrad-CAM), Jiang et al. 2021 (LayerCAM) and Muhammad & Yeasin 2020 (Eigen-CAM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import look_up_option

from ..utils.enums import CAMMethod

__all__ = [
    "CAMRule",
    "SegGradCAMRule",
    "SegHiResCAMRule",
    "SegXResCAMRule",
    "GradCAMPlusPlusRule",
    "XGradCAMRule",
    "LayerCAMRule",
    "EigenCAMRule",
    "ScoreCAMRule",
    "get_rule",
]

_EPS = 1e-7


def _spatial_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).sum(-1)


class CAMRule:
    """Base class of the CAM rules.

    Attributes:
        local: the map is element-wise in space (per-window maps of a sliding-window pass add up).
        needs_gradients: the rule uses ``G``; gradient-free rules are called with ``grads=None``.

    Example:
        .. code-block:: python

            class PositiveGradCAM(CAMRule):  # Seg-Grad-CAM with positive gradients only, usable by both engines
                def statistics(self, acts, grads):
                    return (grads.clamp_min(0).flatten(2).sum(-1),)

                def weights(self, stats, num_positions):
                    return stats[0] / num_positions, None

            maps = SegCAM(net, method=PositiveGradCAM())(image, classes=1)
    """

    local: bool = False
    needs_gradients: bool = True

    def __call__(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """The raw map ``(B, 1, *s)`` of one whole volume (or one window with its own weights)."""
        if self.local:
            return self.local_map(acts, grads)
        stats = self.statistics(acts, grads)
        weights, offset = self.weights(stats, math.prod(acts.shape[2:]))
        return self.combine(acts, weights, offset)

    def local_map(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """The raw map of a local rule."""
        raise NotImplementedError(f"{type(self).__name__} is a global-weight rule.")

    def statistics(self, acts: torch.Tensor, grads: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Per-channel statistics that add up over windows (phase 1 of a sliding-window pass)."""
        raise NotImplementedError(f"{type(self).__name__} is a local rule.")

    def weights(self, stats: Sequence[torch.Tensor], num_positions: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Channel weights ``(B, K)`` and an optional offset ``(B,)`` from summed statistics.

        Args:
            stats: the statistics, summed over windows.
            num_positions: the number of spatial positions of one window's activation.
        """
        raise NotImplementedError(f"{type(self).__name__} is a local rule.")

    @staticmethod
    def combine(acts: torch.Tensor, weights: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_k w_k A^k (+ offset)`` as a ``(B, 1, *s)`` map."""
        raw = torch.einsum("bk...,bk->b...", acts, weights.to(acts.dtype)).unsqueeze(1)
        if offset is not None:
            raw = raw + offset.to(acts.dtype).view(-1, *([1] * (raw.ndim - 1)))
        return raw


class SegGradCAMRule(CAMRule):
    """Seg-Grad-CAM: ``sum_k mean_u(G^k) A^k``."""

    def statistics(self, acts, grads):
        return (_spatial_sum(grads),)

    def weights(self, stats, num_positions):
        return stats[0] / num_positions, None


class SegHiResCAMRule(CAMRule):
    """Seg-HiRes-Grad-CAM: ``sum_k G^k ⊙ A^k``. Its map sums to the region score minus the head's bias term on a
    network that is linear after the layer (completeness)."""

    local = True

    def local_map(self, acts, grads):
        return (grads * acts).sum(1, keepdim=True)


class SegXResCAMRule(CAMRule):
    """Seg-XRes-CAM: ``sum_k up(pool_p(G^k)) ⊙ A^k`` with block pooling of size ``pool_size`` and nearest upsampling.

    Args:
        pool_size: the block size ``p`` in feature voxels; ``p = 1`` is Seg-HiRes-Grad-CAM.
        pool_mode: ``"max"`` or ``"mean"`` pooling of the gradient blocks.
    """

    local = True

    def __init__(self, pool_size: int | Sequence[int] = 2, pool_mode: str = "max") -> None:
        self.pool_size = pool_size
        self.pool_mode = look_up_option(pool_mode, ("max", "mean"))

    def local_map(self, acts, grads):
        dims = grads.ndim - 2
        size = tuple(self.pool_size) if isinstance(self.pool_size, Sequence) else (self.pool_size,) * dims
        pool = getattr(F, f"{'max' if self.pool_mode == 'max' else 'avg'}_pool{dims}d")
        kwargs = {} if self.pool_mode == "max" else {"count_include_pad": False}
        pooled = pool(grads, kernel_size=size, stride=size, ceil_mode=True, **kwargs)
        for axis, p in enumerate(size):
            pooled = pooled.repeat_interleave(p, dim=2 + axis)
        pooled = pooled[(slice(None), slice(None), *(slice(0, s) for s in grads.shape[2:]))]
        return (pooled * acts).sum(1, keepdim=True)


class GradCAMPlusPlusRule(CAMRule):
    """Grad-CAM++ in closed form: ``alpha = G² / (2G² + sum_u(A) G³)``, ``w_k = sum_u alpha ReLU(G)`` (never exp(S))."""

    def statistics(self, acts, grads):
        g2 = grads.pow(2)
        act_sum = _spatial_sum(acts).view(*acts.shape[:2], *([1] * (acts.ndim - 2)))
        alpha = g2 / (2 * g2 + act_sum * g2 * grads + _EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (_spatial_sum(alpha * grads.clamp_min(0)),)

    def weights(self, stats, num_positions):
        return stats[0], None


class XGradCAMRule(CAMRule):
    """XGrad-CAM: ``w_k = sum_u(A^k G^k) / sum_u(A^k)``."""

    def statistics(self, acts, grads):
        return _spatial_sum(acts * grads), _spatial_sum(acts)

    def weights(self, stats, num_positions):
        return stats[0] / (stats[1] + _EPS), None


class LayerCAMRule(CAMRule):
    """LayerCAM: ``sum_k ReLU(G^k) ⊙ A^k``."""

    local = True

    def local_map(self, acts, grads):
        return (grads.clamp_min(0) * acts).sum(1, keepdim=True)


class EigenCAMRule(CAMRule):
    """Eigen-CAM: the activations projected on their first principal component (gradient-free, class-agnostic).

    The sign of the component is chosen so that its channel weights sum to a non-negative value (the map then
    correlates positively with the channel-summed activation); the statistics (sums of ``A`` and ``A Aᵀ``) add up
    over windows, so a sliding-window pass uses one component for the whole volume.
    """

    needs_gradients = False

    def statistics(self, acts, grads):
        flat = acts.flatten(2).double()
        count = torch.full((acts.shape[0],), flat.shape[-1], dtype=flat.dtype, device=flat.device)
        return flat.sum(-1), torch.einsum("bkn,bjn->bkj", flat, flat), count

    def weights(self, stats, num_positions):
        total, outer, count = stats
        mean = total / count[:, None]
        cov = outer / count[:, None, None] - mean[:, :, None] * mean[:, None, :]
        _, vectors = torch.linalg.eigh(cov)
        component = vectors[..., -1]
        component = component * torch.where(component.sum(-1, keepdim=True) < 0, -1.0, 1.0)
        return component, -(component * mean).sum(-1)


class ScoreCAMRule(CAMRule):
    """Score-CAM: channel weights from masked forward passes; computed by the engines, not from ``(A, G)``."""

    needs_gradients = False

    def weights(self, stats, num_positions):
        return torch.softmax(stats[0], dim=1), None


def get_rule(method: str | CAMMethod | CAMRule, **kwargs) -> CAMRule:
    """The rule for a method name (``kwargs`` go to its constructor, e.g. ``pool_size`` for ``"xrescam"``).

    Example:
        .. code-block:: python

            rule = get_rule("xrescam", pool_size=2, pool_mode="mean")
            raw = rule(acts, grads)  # (B, 1, *s)
    """
    if isinstance(method, CAMRule):
        return method
    rules = {
        CAMMethod.GRADCAM: SegGradCAMRule,
        CAMMethod.HIRESCAM: SegHiResCAMRule,
        CAMMethod.XRESCAM: SegXResCAMRule,
        CAMMethod.GRADCAMPP: GradCAMPlusPlusRule,
        CAMMethod.XGRADCAM: XGradCAMRule,
        CAMMethod.LAYERCAM: LayerCAMRule,
        CAMMethod.EIGENCAM: EigenCAMRule,
        CAMMethod.SCORECAM: ScoreCAMRule,
    }
    return rules[look_up_option(method, CAMMethod)](**kwargs)
