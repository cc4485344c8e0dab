# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Explicit normalisation of CAMs, a separate step: raw maps stay comparable across cases, windows, layers, classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.utils import look_up_option

from .roundoff import roundoff_tolerance

__all__ = ["normalize_cam"]


def normalize_cam(cam: torch.Tensor, mode: str = "minmax", percentiles: Sequence[float] = (1.0, 99.0)) -> torch.Tensor:
    """Scale each ``(batch item, channel)`` map of ``cam`` ``(B, N, *spatial)`` to [0, 1].

    Args:
        cam: raw CAMs; a ``MetaTensor`` keeps its metadata.
        mode: ``"minmax"`` (min -> 0, max -> 1) or ``"percentile"`` (``percentiles`` -> 0 and 1, clipped).
        percentiles: lower and upper percentile for ``"percentile"``.

    A constant map becomes all zeros (never NaN), and so does a map constant up to float round-off (its span at most
    ``roundoff_tolerance`` of its magnitude, see :py:mod:`monai_segcam.cam.roundoff`): its variations are rounding,
    and stretching them to [0, 1] would draw noise as a confident picture. An all-zero map (the engines return one
    for a map at round-off of its terms) stays all zero.

    Example:
        .. code-block:: python

            shown = normalize_cam(SegCAM(net)(image).map, mode="percentile", percentiles=(1, 99))
    """
    mode = look_up_option(mode, ("minmax", "percentile"))
    flat = cam.as_tensor().flatten(2).float() if isinstance(cam, MetaTensor) else cam.flatten(2).float()
    if mode == "minmax":
        low, high = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    else:
        q = torch.tensor([percentiles[0] / 100.0, percentiles[1] / 100.0], device=flat.device)
        bounds = torch.quantile(flat, q, dim=-1, keepdim=True)
        low, high = bounds[0], bounds[1]
    span = high - low
    dtype = cam.dtype if cam.is_floating_point() else flat.dtype
    magnitude = flat.abs().amax(-1, keepdim=True)
    stretch = (span > 0) & (span > roundoff_tolerance(dtype) * magnitude)
    scaled = torch.where(stretch, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    scaled = scaled.clamp(0, 1).view(cam.shape)
    if isinstance(cam, MetaTensor):
        out = MetaTensor(scaled)
        out.copy_meta_from(cam)
        return out
    return scaled
