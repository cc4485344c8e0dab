# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What a perturbed voxel is replaced with (a value, the image's mean, zero, a blurred copy of the image, or a given
image), for the occlusion and channel explainers and the deletion/insertion curves alike."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import StrEnum, look_up_option

__all__ = ["Baseline", "make_baseline", "gaussian_blur"]


class Baseline(StrEnum):
    """Named baselines: ``"mean"`` (per image and channel), ``"blur"`` (Gaussian blur, per channel) and ``"zero"``."""

    MEAN = "mean"
    BLUR = "blur"
    ZERO = "zero"


def make_baseline(
    image: torch.Tensor, baseline: float | str | torch.Tensor = 0.0, blur_sigma: float | Sequence[float] = 5.0
) -> torch.Tensor:
    """The baseline image ``(B, C, *spatial)`` that perturbed voxels take their values from.

    Args:
        image: the image ``(B, C, *spatial)``.
        baseline: a number (every perturbed voxel takes it), ``"mean"`` (the mean of each image and channel),
            ``"zero"``, ``"blur"`` (the image blurred by a Gaussian of ``blur_sigma`` voxels, per channel, replicate
            borders) or an image broadcastable to ``image``.
        blur_sigma: the blur's standard deviation in voxels (one value or one per spatial dimension).

    Raises:
        ValueError: for an unknown name (listing the valid ones), a non-finite value or a non-positive sigma.

    Example:
        .. code-block:: python

            base = make_baseline(image, "blur", blur_sigma=4.0)  # same shape as image
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(device=image.device, dtype=image.dtype).expand_as(image)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be a finite number, 'mean', 'zero' or 'blur', got {baseline}.")
        return torch.full_like(image, float(baseline))
    if not isinstance(baseline, str):
        raise TypeError(f"baseline must be a number, 'mean', 'zero' or 'blur', got {type(baseline).__name__}.")
    kind = look_up_option(baseline, Baseline)
    if kind == Baseline.MEAN:
        return image.mean(dim=tuple(range(2, image.ndim)), keepdim=True).expand_as(image).clone()
    if kind == Baseline.ZERO:
        return torch.zeros_like(image)
    if not isinstance(blur_sigma, Sequence) and not blur_sigma > 0:  # per-axis sigmas: 0 leaves an axis untouched
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma}.")
    return gaussian_blur(image, blur_sigma)


def _gaussian_kernel1d(sigma: float, truncated: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(truncated * sigma + 0.5)  # as scipy.ndimage.gaussian_filter
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: torch.Tensor, sigma: float | Sequence[float], truncated: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, *spatial) tensor over any number of spatial dims.

    Each spatial axis is convolved with a sampled, normalised 1D Gaussian truncated at ``truncated * sigma``, with
    replicate padding, so that the output keeps the input's shape and a constant image stays constant (the same
    result as ``scipy.ndimage.gaussian_filter(..., mode="nearest", truncate=truncated)``).

    Args:
        image: (B, C, *spatial) float tensor.
        sigma: standard deviation in voxels, one for all spatial dims or one per dim; 0 leaves an axis untouched.
        truncated: kernel radius in units of sigma.

    .. code-block:: python

        blurred = gaussian_blur(torch.rand(1, 1, 32, 32, 32), sigma=(2.0, 2.0, 1.0))
    """
    spatial_dims = image.ndim - 2
    if spatial_dims < 1:
        raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}.")
    sigmas = [float(sigma)] * spatial_dims if not isinstance(sigma, Sequence) else [float(s) for s in sigma]
    if len(sigmas) != spatial_dims or any(s < 0 for s in sigmas):
        raise ValueError(f"sigma must be non-negative, one value or one per spatial dim ({spatial_dims}), got {sigma}.")
    out = image if image.is_floating_point() else image.float()
    for axis, s in enumerate(sigmas, start=2):
        if s == 0:
            continue
        kernel = _gaussian_kernel1d(s, truncated, out.dtype, out.device)
        radius = kernel.numel() // 2
        moved = out.movedim(axis, -1)
        lines = moved.reshape(-1, 1, moved.shape[-1])
        lines = F.conv1d(F.pad(lines, (radius, radius), mode="replicate"), kernel.view(1, 1, -1))
        out = lines.reshape(moved.shape).movedim(-1, axis)
    return out
