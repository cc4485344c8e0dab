# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Deletion and insertion curves (Petsiuk et al. 2018, RISE) scored on the region score ``S = sum(T * y)``.

Voxels are perturbed in order of decreasing CAM value: deletion replaces them by a baseline (a good map makes the
score drop fast, low AUC is better), insertion starts from the baseline and puts image values back (a good map
makes the score rise fast, high AUC is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from monai.networks.utils import eval_mode
from monai.utils import look_up_option
from monai.utils.enums import StrEnum

from ..utils.baselines import Baseline as PerturbationBaseline
from ..utils.baselines import gaussian_blur, make_baseline

__all__ = [
    "PerturbationMode",
    "PerturbationBaseline",
    "PerturbationCurve",
    "gaussian_blur",
    "region_score_fn",
    "perturbation_curve",
    "auc",
]


class PerturbationMode(StrEnum):
    """Direction of a perturbation curve."""

    DELETION = "deletion"
    INSERTION = "insertion"


class PerturbationCurve(NamedTuple):
    """A perturbation curve: ``scores[i]`` is the score with a share ``fractions[i]`` of the voxels perturbed."""

    fractions: torch.Tensor
    scores: torch.Tensor


def region_score_fn(
    network: Callable[[torch.Tensor], torch.Tensor],
    cotangent: torch.Tensor,
    inferer: Callable[..., torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build a score function ``x -> S(x) = sum(cotangent * network(x))`` per image, with a fixed cotangent map.

    The region (cotangent map ``T``) is fixed once, e.g. from the prediction on the unperturbed image, and the
    region score, not a class probability, is what a perturbation curve tracks. The network runs in eval mode
    under ``torch.no_grad()``; its mode is restored afterwards.

    Args:
        network: segmentation network mapping (N, C, *spatial) images to (N, K, *spatial) logits.
        cotangent: (1, K, *spatial) map ``T`` of the network output's shape, broadcast over the images of a batch.
        inferer: optional MONAI inferer called as ``inferer(x, network)``, e.g. a ``SlidingWindowInferer`` for
            volumes that do not fit in one pass.

    Returns:
        a callable mapping (N, C, *spatial) images to (N,) region scores.

    .. code-block:: python

        logits = inferer(image, net)
        cotangent = torch.zeros_like(logits)
        cotangent[:, 1] = logits.argmax(1) == 1  # explain class 1 over its predicted region
        score_fn = region_score_fn(net, cotangent, inferer=inferer)
    """
    if cotangent.ndim < 3 or cotangent.shape[0] != 1:
        raise ValueError(f"cotangent must be (1, K, *spatial), got shape {tuple(cotangent.shape)}.")
    t = cotangent.detach()

    def score_fn(x: torch.Tensor) -> torch.Tensor:
        with eval_mode(network):  # type: ignore[arg-type]
            y = inferer(x, network) if inferer is not None else network(x)
        if y.shape[1:] != t.shape[1:]:
            raise ValueError(f"cotangent shape {tuple(t.shape)} does not match the network output {tuple(y.shape)}.")
        return (t.to(device=y.device, dtype=y.dtype) * y).flatten(1).sum(1)

    return score_fn


def perturbation_curve(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    cam: torch.Tensor,
    mode: str = PerturbationMode.DELETION,
    steps: int = 20,
    baseline: str | torch.Tensor = PerturbationBaseline.BLUR,
    sigma: float | Sequence[float] = 5.0,
    batch_size: int = 8,
    normalize: bool = False,
) -> PerturbationCurve:
    """Deletion or insertion curve of one image along the order given by a CAM.

    The V voxels are sorted by decreasing CAM value (ties by voxel index) and split into ``steps`` equal chunks
    (``round(i * V / steps)`` voxels after step i). All channels of a voxel are perturbed together. Deletion
    replaces the first voxels by the baseline (step 0 is the image, step ``steps`` the baseline); insertion starts
    from the baseline and puts the first voxels' image values back (step 0 is the baseline, step ``steps`` the
    image). Perturbed images are scored in batches of ``batch_size`` under ``torch.no_grad()``.

    One image per call: loop over a batch, building each image's ``score_fn`` with its own cotangent map.

    Args:
        score_fn: maps (n, C, *spatial) images to (n,) scores, e.g. from :func:`region_score_fn`.
        image: (1, C, *spatial) image.
        cam: map with the image's spatial shape: (1, 1, *spatial), (1, *spatial) or (*spatial).
        mode: ``"deletion"`` or ``"insertion"``.
        steps: number of chunks (the curve has ``steps + 1`` points).
        baseline: ``"blur"`` (Gaussian blur of the image), ``"mean"`` (per-channel mean), ``"zero"``, or a tensor
            broadcastable to the image.
        sigma: blur standard deviation in voxels (one value or one per spatial dim), for ``baseline="blur"``.
        batch_size: number of perturbed images per call of ``score_fn``.
        normalize: divide the scores by the score of the unperturbed image.

    Returns:
        :class:`PerturbationCurve` ``(fractions, scores)``, each of shape (steps + 1,), on the image's device.

    .. code-block:: python

        score_fn = region_score_fn(net, cotangent)
        fractions, scores = perturbation_curve(score_fn, image, cam, mode="deletion", steps=50, baseline="blur")
        deletion_auc = auc(scores, fractions)  # lower is better
    """
    mode = look_up_option(mode, PerturbationMode)
    image = image if image.is_floating_point() else image.float()
    if image.ndim < 3 or image.shape[0] != 1:
        raise ValueError(f"image must be a single (1, C, *spatial) image, got shape {tuple(image.shape)}.")
    spatial = image.shape[2:]
    n_vox = math.prod(spatial)
    if cam.shape[-len(spatial) :] != spatial or cam.numel() != n_vox:
        raise ValueError(f"cam must have one channel and spatial shape {tuple(spatial)}, got {tuple(cam.shape)}.")
    if int(steps) != steps or steps < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive integers, got {steps} and {batch_size}.")
    base = make_baseline(image, baseline, sigma)
    # rank[v] = position of voxel v in the order of decreasing CAM value
    order = torch.sort(cam.detach().reshape(-1).to(image.device), descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_vox, device=image.device)
    rank = rank.reshape(1, 1, *spatial)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_vox / steps).long().to(image.device)
    # deletion: perturbed voxels take the baseline; insertion: perturbed (revealed) voxels take the image
    perturbed, kept = (base, image) if mode == PerturbationMode.DELETION else (image, base)
    scores = []
    with torch.no_grad():
        for start in range(0, steps + 1, batch_size):
            chunk = counts[start : start + batch_size].view(-1, *([1] * (image.ndim - 1)))
            batch = torch.where(rank < chunk, perturbed, kept)
            out = score_fn(batch)
            if out.shape != (batch.shape[0],):
                raise ValueError(f"score_fn must return ({batch.shape[0]},) scores, got {tuple(out.shape)}.")
            scores.append(out.to(image.device))
    curve = torch.cat(scores)
    if normalize:
        reference = curve[0] if mode == PerturbationMode.DELETION else curve[-1]
        if reference == 0:
            raise ValueError("cannot normalise the curve: the unperturbed image has a zero score.")
        curve = curve / reference
    return PerturbationCurve(fractions=counts.to(curve.dtype) / n_vox, scores=curve)


def auc(scores: torch.Tensor, fractions: torch.Tensor | None = None) -> torch.Tensor:
    """Area under a curve by the trapezoid rule along the last dim.

    Args:
        scores: (..., P) curve values.
        fractions: (P,) or (..., P) abscissae; ``None`` spaces the points evenly on [0, 1].

    .. code-block:: python

        auc(torch.tensor([1.0, 0.5, 0.0]))  # tensor(0.5000)
    """
    if scores.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {scores.shape[-1]}.")
    if fractions is None:
        return torch.trapezoid(scores, dx=1.0 / (scores.shape[-1] - 1), dim=-1)
    return torch.trapezoid(scores, fractions.to(device=scores.device, dtype=scores.dtype), dim=-1)
