# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""CAM rules: small pure functions of the activations ``A`` and the region-score gradients ``G = dS/dA``.

``A`` and ``G`` are ``(B, K, *s)`` tensors (K channels, spatial shape ``s``); every rule returns a raw map
``(B, 1, *s)`` before ReLU and upsampling. Rules come in two kinds, which matters for sliding windows:

- *local* rules (Seg-HiRes-Grad-CAM, Seg-XRes-CAM, LayerCAM) are element-wise in space: per-window maps add up;
- *global-weight* rules (Seg-Grad-CAM, Grad-CAM++, XGrad-CAM, Eigen-CAM) compute one weight per channel from
  window-summable statistics, then combine the activations: ``map = sum_k w_k A^k + offset``.

Each rule also tells the *scale of its terms* (:py:meth:`CAMRule.local_scale`, :py:meth:`CAMRule.weight_scale`):
``sum_k |G^k A^k|`` for an element-wise rule, ``sum_k |w|_k |A^k|`` for a global-weight one, where ``|w|_k`` sums the
magnitudes of the terms of ``w_k`` (``mean_u |G^k|`` for Seg-Grad-CAM). The engines compare a map with it to detect a
map that is float round-off (see :py:mod:`monai_segcam.cam.roundoff`).

The segmentation forms follow Vinogradova et al. 2020 (Seg-Grad-CAM), Draelos & Carin 2020 and Rheude et al. 2024
(HiResCAM / Seg-HiRes-Grad-CAM), Hasany et al. 2023 (Seg-XRes-CAM), Chattopadhay et al. 2018 (Grad-CAM++), Fu et al.
2020 (XGrad-CAM), Jiang et al. 2021 (LayerCAM) and Muhammad & Yeasin 2020 (Eigen-CAM).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from monai.utils import look_up_option

__all__ = [
    "CAMRule",
    "register_method",
    "method_names",
    "SegGradCAMRule",
    "SegHiResCAMRule",
    "SegXResCAMRule",
    "GradCAMPlusPlusRule",
    "GradCAMPlusPlusReLURule",
    "XGradCAMRule",
    "LayerCAMRule",
    "EigenCAMRule",
    "get_rule",
    "registered_rule",
]

_EPS = 1e-7


def _spatial_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).sum(-1)


_METHODS: dict[str, type[CAMRule]] = {}
_Rule = TypeVar("_Rule", bound="type[CAMRule]")


def register_method(name: str) -> Callable[[_Rule], _Rule]:
    """Class decorator registering a :py:class:`CAMRule` under a method name: every front door (the engines'
    ``method=``, the CLI's ``--method`` choices, the bundles) then accepts the name.

    Example:
        .. code-block:: python

            @register_method("poshirescam")
            class PositiveHiResCAM(CAMRule):
                local = True

                def local_map(self, acts, grads):
                    return (grads.clamp_min(0) * acts.clamp_min(0)).sum(1, keepdim=True)
    """

    def register(cls: _Rule) -> _Rule:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"Method name {name!r} is already registered for {_METHODS[name].__name__}.")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return register


def method_names() -> list[str]:
    """The registered method names, in registration order.

    Example:
        >>> method_names()[:3]
        ['gradcam', 'hirescam', 'xrescam']
    """
    return list(_METHODS)


class CAMRule:
    """Base class of the CAM rules.

    Attributes:
        name: the registered method name (set by :py:func:`register_method`; the class name otherwise).
        local: the map is element-wise in space (per-window maps of a sliding-window pass add up).
        needs_gradients: the rule uses ``G``; gradient-free rules are called with ``grads=None``.
        needs_activation_sum: :py:meth:`statistics` also takes ``activation_sum``, ``sum_u A`` per batch item and
            channel over the whole explained input (every window), as Grad-CAM++'s ``alpha`` does.
        class_specific: the map depends on the explained class (Eigen-CAM's does not: it takes no ``contrast``).
        layer: the one layer the rule explains whatever the engine's ``layers`` (``"input"`` for the input
            attributions of :py:mod:`monai_segcam.cam.attributions`); ``None``: the engine's layers.

    Example:
        .. code-block:: python

            class PositiveGradCAM(CAMRule):  # Seg-Grad-CAM with positive gradients only, usable by both engines
                def statistics(self, acts, grads):
                    return (grads.clamp_min(0).flatten(2).sum(-1),)

                def weights(self, stats, num_positions):
                    return stats[0] / num_positions, None

            maps = SegCAM(net, method=PositiveGradCAM())(image, classes=1)
    """

    name: str = ""
    local: bool = False
    needs_gradients: bool = True
    needs_activation_sum: bool = False
    layer: str | None = None
    class_specific: bool = True

    @property
    def method_name(self) -> str:
        """The name results and file names use: the registered name, else the class name."""
        return self.name or type(self).__name__

    def collect_statistics(self, source: Any) -> dict[tuple[str, int, int], tuple[torch.Tensor, ...]]:
        """Phase 1 of a global-weight rule: the statistics per ``(layer, class index, member)`` summed over windows
        and flips. The default sums :py:meth:`statistics` of each window's ``(A, G)``
        (``source.gradient_statistics()``); a rule scoring masked inputs (Score-CAM) overrides this."""
        return source.gradient_statistics()

    def __call__(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """The raw map ``(B, 1, *s)`` of one whole volume (or one window with its own weights)."""
        if self.local:
            return self.local_map(acts, grads)
        stats = self.statistics(acts, grads)
        weights, offset = self.weights(stats, math.prod(acts.shape[2:]))
        return self.combine(acts, weights, offset)

    def map_channels(self, input_channels: int) -> int:
        """Channels of the raw map per class: 1 (input attributions keep one per input channel)."""
        return 1

    def input_points(self, image: torch.Tensor) -> Any:
        """The points where the gradient is taken, as items of the window pass (see
        :py:class:`~monai_segcam.cam.attributions.InputPoints`); ``None``: the image itself."""
        return None

    def finish_maps(self, source: Any) -> dict[str, torch.Tensor]:
        """The maps of a local rule once every window ran (``source`` the window pass): its raw sums."""
        return source.maps

    def local_map(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """The raw map of a local rule."""
        raise NotImplementedError(f"{type(self).__name__} is a global-weight rule.")

    def local_scale(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """The scale of a local rule's terms ``(B, 1, *s)``, e.g. ``sum_k |G^k A^k|``: the map of the magnitudes by
        default (exact for a sum of products; an override states a rule's own terms)."""
        return self.local_map(acts.abs(), None if grads is None else grads.abs())

    def sum_activations(self, acts: torch.Tensor) -> torch.Tensor:
        """``sum_u A`` per batch item and channel ``(B, K)`` of one window: what a rule with
        ``needs_activation_sum`` sums over every window (Grad-CAM++ on ``ReLU(A)`` sums ``ReLU(A)``)."""
        return _spatial_sum(acts)

    def weight_scale(self, stats: Sequence[torch.Tensor], num_positions: int) -> torch.Tensor:
        """The magnitude of the terms of each channel weight ``(B, K)`` (``|w_k|`` by default; Seg-Grad-CAM's
        ``mean_u |G^k|``): a map ``sum_k w_k A^k`` is compared with ``sum_k |w|_k |A^k|`` to detect round-off."""
        return self.weights(stats, num_positions)[0].abs()

    def combine_scale(
        self, acts: torch.Tensor, weight_scale: torch.Tensor, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scale of the terms of :py:meth:`combine`: ``sum_k |w|_k |A^k| (+ |offset|)`` as a ``(B, 1, *s)`` map."""
        return CAMRule.combine(acts.abs(), weight_scale, None if offset is None else offset.abs())

    def diagnose(self, stats: Sequence[torch.Tensor], num_positions: int) -> str | None:
        """A warning about the summed statistics of one layer and class (e.g. Grad-CAM++'s near-singular
        denominators), or ``None``; the engine adds the layer and class and warns once per call."""
        return None

    def statistics(
        self, acts: torch.Tensor, grads: torch.Tensor | None, activation_sum: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Per-channel statistics that add up over windows (phase 1 of a sliding-window pass); ``activation_sum`` is
        given to rules with ``needs_activation_sum`` only."""
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


@register_method("gradcam")
class SegGradCAMRule(CAMRule):
    """Seg-Grad-CAM: ``sum_k mean_u(G^k) A^k``; its terms' scale is ``sum_k mean_u |G^k| |A^k|``."""

    def statistics(self, acts, grads):
        return _spatial_sum(grads), _spatial_sum(grads.abs())

    def weights(self, stats, num_positions):
        return stats[0] / num_positions, None

    def weight_scale(self, stats, num_positions):
        return stats[1] / num_positions


@register_method("hirescam")
class SegHiResCAMRule(CAMRule):
    """Seg-HiRes-Grad-CAM: ``sum_k G^k ⊙ A^k``. Its map sums to the region score minus the head's bias term on a
    network that is linear after the layer (completeness)."""

    local = True

    def local_map(self, acts, grads):
        return (grads * acts).sum(1, keepdim=True)


@register_method("xrescam")
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


@register_method("gradcampp")
class GradCAMPlusPlusRule(CAMRule):
    """Grad-CAM++ (Chattopadhay et al. 2018) in closed form, never with ``exp(S)``: ``w_k = sum_u alpha ReLU(G^k)``
    with ``alpha = G² / (2G² + sum_u(A) G³)``, computed as its exact simplification ``alpha = 1 / (2 + G sum_u(A))``
    where ``G != 0`` (``alpha = 0`` where ``G = 0``), so no epsilon decides the map.

    The paper's activations are post-ReLU (``A >= 0``): for every term that counts (``G > 0``) the denominator is
    then at least 2. MONAI's networks have signed activations (PReLU, instance/group norm outputs), ``sum_u(A)`` can
    be negative and the denominator ``2 + G sum_u(A)`` can reach 0: ``alpha`` explodes and a few voxels decide the
    weight. Terms with ``|2 + G sum_u(A)| < singular_bound`` are counted as near-singular and the engine warns with
    the layer and the share of channel weights they affect. ``activation="relu"`` (method ``"gradcampp_relu"``) is
    the paper's variant on ``ReLU(A)``: ``alpha`` and the map use ``A⁺ = ReLU(A)``, never singular. Use
    ``"gradcampp"`` at layers with non-negative activations (after a ReLU) where both agree, ``"gradcampp_relu"`` on
    layers with signed activations (MONAI's UNet, SegResNet, BasicUNet with PReLU/instance norm outputs).

    ``sum_u(A)`` runs over the whole explained input: with sliding windows, over every window's positions.

    Args:
        activation: ``"identity"`` (the layer's activations as they are) or ``"relu"`` (the paper's ``ReLU(A)``).
        singular_bound: denominators ``|2 + G sum_u(A)|`` below it are near-singular (``|alpha| > 1 / bound``, i.e.
            more than 200 times the paper's largest ``alpha`` of 1/2 for the default 0.01).

    Example:
        .. code-block:: python

            maps = SegCAM(net, layers="bottleneck", method="gradcampp", activation="relu")(image, classes=1)
    """

    needs_activation_sum = True

    def __init__(self, activation: str = "identity", singular_bound: float = 1e-2) -> None:
        self.activation = look_up_option(activation, ("identity", "relu"))
        if not singular_bound > 0:
            raise ValueError(f"singular_bound must be positive, got {singular_bound}.")
        self.singular_bound = float(singular_bound)

    def _acts(self, acts: torch.Tensor) -> torch.Tensor:
        return acts.clamp_min(0) if self.activation == "relu" else acts

    def sum_activations(self, acts):
        return _spatial_sum(self._acts(acts))

    def statistics(self, acts, grads, activation_sum=None):
        total = self.sum_activations(acts) if activation_sum is None else activation_sum
        denominator = 2 + grads * total.view(*acts.shape[:2], *([1] * (acts.ndim - 2))).to(grads.dtype)
        counted = grads > 0  # alpha multiplies ReLU(G): only these terms make the weight
        terms = torch.where(counted, grads / torch.where(counted, denominator, 2.0), 0.0)  # alpha * ReLU(G)
        singular = counted & (denominator.abs() < self.singular_bound)
        magnitude = terms.abs()
        return (_spatial_sum(terms), _spatial_sum(magnitude), _spatial_sum(torch.where(singular, magnitude, 0.0)),
                _spatial_sum(singular.to(grads.dtype)))  # fmt: skip

    def weights(self, stats, num_positions):
        return stats[0], None

    def weight_scale(self, stats, num_positions):
        return stats[1]

    def combine(self, acts, weights, offset=None):
        return CAMRule.combine(self._acts(acts), weights, offset)

    def combine_scale(self, acts, weight_scale, offset=None):
        return CAMRule.combine(self._acts(acts).abs(), weight_scale)

    def diagnose(self, stats, num_positions):
        magnitude, singular_magnitude, singular_count = stats[1], stats[2], stats[3]
        affected = singular_count > 0
        if not affected.any():
            return None
        share = float(affected.double().mean())
        mass = float(singular_magnitude.sum() / magnitude.sum().clamp_min(torch.finfo(magnitude.dtype).tiny))
        return (
            f"Grad-CAM++ is near-singular: {int(affected.sum())} of {affected.numel()} channel weights ({share:.0%}) "
            f"have terms with |2 + G sum_u A| < {self.singular_bound:g} ({int(singular_count.sum())} voxels, "
            f"{mass:.0%} of the weights' magnitude), so a few voxels decide the map. The layer's activations are "
            "signed; the paper's post-ReLU variant, method='gradcampp_relu' (activation='relu'), is never singular."
        )


@register_method("gradcampp_relu")
class GradCAMPlusPlusReLURule(GradCAMPlusPlusRule):
    """Grad-CAM++ on ``ReLU(A)`` (the paper's post-ReLU activations): :py:class:`GradCAMPlusPlusRule` with
    ``activation="relu"``, the one to use on layers with signed activations.

    Example:
        .. code-block:: python

            maps = SegCAM(net, layers="bottleneck", method="gradcampp_relu")(image, classes=1)
    """

    def __init__(self, activation: str = "relu", singular_bound: float = 1e-2) -> None:
        super().__init__(activation, singular_bound)


@register_method("xgradcam")
class XGradCAMRule(CAMRule):
    """XGrad-CAM: ``w_k = sum_u(A^k G^k) / sum_u(A^k)``."""

    def statistics(self, acts, grads):
        return _spatial_sum(acts * grads), _spatial_sum(acts), _spatial_sum((acts * grads).abs())

    def weights(self, stats, num_positions):
        return stats[0] / (stats[1] + _EPS), None

    def weight_scale(self, stats, num_positions):
        return stats[2] / (stats[1] + _EPS).abs()


@register_method("layercam")
class LayerCAMRule(CAMRule):
    """LayerCAM: ``sum_k ReLU(G^k) ⊙ A^k``."""

    local = True

    def local_map(self, acts, grads):
        return (grads.clamp_min(0) * acts).sum(1, keepdim=True)

    def local_scale(self, acts, grads):
        return (grads.clamp_min(0) * acts.abs()).sum(1, keepdim=True)


@register_method("eigencam")
class EigenCAMRule(CAMRule):
    """Eigen-CAM: the activations projected on their first principal component (gradient-free, class-agnostic).

    The sign of the component is chosen so that its channel weights sum to a non-negative value (the map then
    correlates positively with the channel-summed activation); the statistics (sums of ``A`` and ``A Aᵀ``) add up
    over windows, so a sliding-window pass uses one component for the whole volume.
    """

    needs_gradients = False
    class_specific = False

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


def registered_rule(name: str) -> type[CAMRule]:
    """The rule class registered under ``name`` (its class attributes, e.g. ``layer``, without building it).

    Example:
        >>> registered_rule("gradient").layer, registered_rule("hirescam").layer
        ('input', None)
    """
    if name not in _METHODS:
        get_rule(name)  # raises the error listing the registered names
    return _METHODS[name]


def get_rule(method: str | CAMRule, **kwargs: Any) -> CAMRule:
    """The rule registered under a method name (``kwargs`` go to its constructor, e.g. ``pool_size`` for
    ``"xrescam"``); a :py:class:`CAMRule` instance is returned as it is.

    Example:
        .. code-block:: python

            rule = get_rule("xrescam", pool_size=2, pool_mode="mean")
            raw = rule(acts, grads)  # (B, 1, *s)
    """
    if isinstance(method, CAMRule):
        return method
    name = str(method)
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown CAM method {name!r}.{hint} Registered methods: {method_names()}.")
    return _METHODS[name](**kwargs)
