# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Robustness of an explanation to small input noise (Quantus' *Robustness* category): max-sensitivity.

Max-sensitivity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations"; Quantus
``MaxSensitivity``) perturbs the image ``x`` with ``n_samples`` draws of uniform noise ``d_k`` in ``[-r, r]`` per
voxel, ``r = radius * (max(x) - min(x))``, and reports the largest relative change of the map

    ``max_k ||e(x + d_k) - e(x)||_2 / ||e(x)||_2``

(Quantus' default normalisation by the map's Frobenius norm): 0 for a map that noise does not change, lower is
more robust. The region being explained stays fixed: ``explain_fn`` decides what it explains (e.g. a fixed cotangent
or region), so the score measures the map's reaction, not a change of the question.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["max_sensitivity"]


def max_sensitivity(
    explain_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    n_samples: int = 8,
    radius: float = 0.02,
    seed: int = 0,
) -> torch.Tensor:
    """Max-sensitivity of ``explain_fn`` at ``image`` (see the module's formula).

    Args:
        explain_fn: maps an image ``(1, C, *spatial)`` to its explanation (any shape, the same for every image).
        image: the image ``(1, C, *spatial)``.
        n_samples: the number of noisy copies.
        radius: the noise's half-width as a share of the image's value range (Quantus' ``lower_bound``).
        seed: seeds the noise (drawn on the CPU, so a seed gives the same copies on every device).

    Returns:
        a float64 scalar tensor (0-dim); 0 with a warning when the map at ``image`` is zero everywhere and stays so,
        else ``inf`` when it is zero but a noisy map is not.

    Example:
        .. code-block:: python

            explain = lambda x: engine(x, classes=1, region=region)["pre_head"]
            max_sensitivity(explain, image, n_samples=8, radius=0.02)  # 0: not moved by noise
    """
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}.")
    if not radius >= 0:
        raise ValueError(f"radius must be non-negative, got {radius}.")
    image = image.detach()
    reference = explain_fn(image).detach().to(torch.float64)
    width = float(radius) * float(image.max() - image.min())
    generator = torch.Generator().manual_seed(int(seed))
    worst = torch.zeros((), dtype=torch.float64)
    for _ in range(int(n_samples)):
        noise = (torch.rand(image.shape, generator=generator, dtype=torch.float64) * 2 - 1) * width
        noisy = explain_fn(image + noise.to(device=image.device, dtype=image.dtype)).detach().to(torch.float64)
        if noisy.shape != reference.shape:
            raise ValueError(f"explain_fn gave {tuple(noisy.shape)} for a noisy copy, {tuple(reference.shape)} before.")
        worst = torch.maximum(worst, (noisy - reference).norm().cpu())
    norm = reference.norm().cpu()
    if norm == 0:
        warnings.warn("max_sensitivity: the map is zero everywhere at the image.", stacklevel=2)
        return torch.zeros((), dtype=torch.float64) if worst == 0 else torch.full((), float("inf"), dtype=torch.float64)
    return worst / norm
