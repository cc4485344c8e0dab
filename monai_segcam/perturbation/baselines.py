# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What a perturbed voxel is replaced with: a value, the image's mean, or a blurred copy of the image."""

from __future__ import annotations

import math

import torch
from monai.utils import StrEnum, look_up_option

from ..metrics.perturbation import gaussian_blur

__all__ = ["Baseline", "make_baseline"]


class Baseline(StrEnum):
    """Named baselines: ``"mean"`` (per image and channel) and ``"blur"`` (Gaussian blur, per channel)."""

    MEAN = "mean"
    BLUR = "blur"


def make_baseline(image: torch.Tensor, baseline: float | str = 0.0, blur_sigma: float = 5.0) -> torch.Tensor:
    """The baseline image ``(B, C, *spatial)`` that perturbed voxels take their values from.

    Args:
        image: the image ``(B, C, *spatial)``.
        baseline: a number (every perturbed voxel takes it), ``"mean"`` (the mean of each image and channel) or
            ``"blur"`` (the image blurred by a Gaussian of ``blur_sigma`` voxels, per channel, replicate borders).
        blur_sigma: the blur's standard deviation in voxels.

    Raises:
        ValueError: for an unknown name (listing the valid ones), a non-finite value or a non-positive sigma.

    Example:
        .. code-block:: python

            base = make_baseline(image, "blur", blur_sigma=4.0)  # same shape as image
    """
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be a finite number, 'mean' or 'blur', got {baseline}.")
        return torch.full_like(image, float(baseline))
    if not isinstance(baseline, str):
        raise TypeError(f"baseline must be a number, 'mean' or 'blur', got {type(baseline).__name__}.")
    kind = look_up_option(baseline, Baseline)
    if kind == Baseline.MEAN:
        return image.mean(dim=tuple(range(2, image.ndim)), keepdim=True).expand_as(image).clone()
    if not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma}.")
    return gaussian_blur(image, blur_sigma)
