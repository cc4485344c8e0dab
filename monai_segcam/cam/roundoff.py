# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Round-off is zero: a CAM whose magnitude is at float round-off relative to the scale of its own terms.

A raw map is a sum of terms: ``sum_k G^k A^k`` for an element-wise rule, ``sum_k w_k A^k`` with ``w_k`` itself a sum
over positions for a global-weight rule. When the exact sum is zero (e.g. Seg-Grad-CAM just before a normalisation
layer that removes per-channel means: instance norm, or group norm with one channel per group, makes
``sum_u G^k = 0``), floating point returns round-off, about ``eps`` times the scale of the terms, and a min-max
normalisation stretches it into a confident-looking picture. The engines therefore compare each map (batch item,
class) with the scale of its terms (:py:meth:`~monai_segcam.cam.methods.CAMRule.local_scale`,
:py:meth:`~monai_segcam.cam.methods.CAMRule.combine_scale`; with sliding windows the largest window's scale):

    ``max_u |map(u)| <= ROUNDOFF_FACTOR * eps * max_u scale(u)``

with ``eps`` the machine epsilon of the precision maps and statistics accumulate in (the image's). Such a map is
returned as exact zeros and the engine warns once per call, naming the layers and classes.

``ROUNDOFF_FACTOR = 4096`` (float32: maps below 4.9e-4 of their terms' scale; float64: 9.1e-13). Measured on a
SegResNet (``init_filters=8``, 32³ input): Seg-Grad-CAM at ``pre_head`` and ``up_layers.1`` is 60 to 85 eps of its
terms' scale in float32 (2e-16 in float64: exactly zero), while real maps of every method and layer of UNet and
SegResNet are 1e-2 to 1 of theirs; round-off grows about as the square root of the number of summed positions,
which leaves room for volumes 2000 times larger. A map whose exact value is tiny but not zero is zeroed in
float32 when it is below the bound (XGrad-CAM at that ``pre_head`` is 1e-5 of its terms' scale, set by the group
norm's epsilon, and kept in float64). Under ``amp`` the half-precision gradients' own round-off is larger than this
bound and is not detected.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

__all__ = ["ROUNDOFF_FACTOR", "roundoff_tolerance", "is_roundoff", "zero_roundoff_maps"]

ROUNDOFF_FACTOR = 4096.0


def roundoff_tolerance(dtype: torch.dtype) -> float:
    """The relative size below which a map is round-off of its terms: ``ROUNDOFF_FACTOR * eps(dtype)``.

    Example:
        >>> roundoff_tolerance(torch.float32) == 4096 * torch.finfo(torch.float32).eps
        True
    """
    return ROUNDOFF_FACTOR * torch.finfo(dtype).eps


def is_roundoff(peak: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Which maps are round-off: ``peak`` (``max |map|``) at most ``roundoff_tolerance(dtype)`` times ``scale``
    (``max`` of the terms' scale), elementwise; an exactly zero map is not flagged (it is already zero).

    Example:
        >>> is_roundoff(torch.tensor([3e-6, 0.5, 0.0]), torch.tensor([2.0, 2.0, 2.0]), torch.float32).tolist()
        [True, False, False]
    """
    return (peak > 0) & (peak <= roundoff_tolerance(dtype) * scale)


def zero_roundoff_maps(
    maps: Mapping[str, torch.Tensor],
    scales: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    classes: Sequence[int],
    method: str,
    modules: Mapping[str, str] | None = None,
    stacklevel: int = 2,
) -> dict[str, torch.Tensor]:
    """Maps ``{layer: (B, n, *s)}`` with every round-off map (batch item, class) set to exact zeros, and one warning
    naming the layers, classes and why; ``scales`` holds ``{layer: (B, n)}``, the largest scale of each map's terms.

    Example:
        .. code-block:: python

            maps = zero_roundoff_maps({"pre_head": raw}, {"pre_head": scale}, torch.float32, (1,), "gradcam")
    """
    out, found = {}, []
    for key, value in maps.items():
        peak = value.detach().flatten(2).abs().amax(-1)
        flagged = is_roundoff(peak, scales[key].to(peak.device, peak.dtype), dtype)
        if flagged.any():
            value = torch.where(flagged[(...,) + (None,) * (value.ndim - 2)], torch.zeros_like(value), value)
            for i in flagged.any(0).nonzero().flatten().tolist():
                ratio = float((peak[:, i] / scales[key][:, i].to(peak)).max())
                found.append(f"{key!r}{f' ({modules[key]})' if modules and modules.get(key) else ''} class "
                             f"{classes[i]} (max |map| {float(peak[:, i].max()):.2g}, {ratio:.1g} of its terms' scale)")  # fmt: skip
        out[key] = value
    if found:
        warnings.warn(
            f"{method}: the map of {'; '.join(found)} is at {dtype} round-off of the scale of its terms "
            f"(below {roundoff_tolerance(dtype):.2g}): in this precision it cannot be told from zero and is returned as "
            "exact zeros. "
            "Usual cause: a normalisation layer after this layer (instance norm, or group norm with one channel per "
            "group) cancels per-channel means, so the gradients' spatial sums (global-weight rules' channel weights) "
            "vanish; explain another layer or use an element-wise method (hirescam, layercam).",
            stacklevel=stacklevel,
        )
    return out
