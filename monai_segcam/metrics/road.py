# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""ROAD, RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"; Quantus' *Faithfulness* category, ``ROAD``): a deletion curve whose removed voxels are not set to a
constant, which leaks the removed shape to the network, but imputed from their neighbours.

Noisy linear imputation: the removed voxels' values ``u`` solve the discrete Laplace equation with the kept voxels as
boundary, each removed voxel the mean of its face neighbours inside the volume (6 in 3D; ROAD's 2D version also
weighs the diagonal neighbours), channel by channel,

    ``deg(r) u_r - sum_{n ~ r, n removed} u_n = sum_{n ~ r, n kept} x_n``,

solved by conjugate gradients (the system is symmetric positive definite) to a relative residual of
1e-12, then Gaussian noise of standard deviation ``noise * (max(x) - min(x))`` is added to them. A linear ramp is imputed
exactly (it is harmonic). A group of removed voxels with no kept neighbour takes the mean of the kept voxels.

Voxels are removed in the map's order: most relevant first (``"morf"``, a faithful map makes the score fall fast:
low area is better) or least relevant first (``"lerf"``: the score should stay, high area is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.utils import StrEnum, look_up_option, optional_import

from .perturbation import PerturbationCurve

__all__ = ["RoadOrder", "linear_imputation", "road_curve"]

_, has_scipy = optional_import("scipy.sparse.linalg")


class RoadOrder(StrEnum):
    """The removal order of :func:`road_curve`: most relevant first (``"morf"``) or least relevant first (``"lerf"``)."""

    MORF = "morf"
    LERF = "lerf"


def _laplace_system(removed: np.ndarray):
    """The sparse matrix of the removed voxels' equations, the kept neighbours of each (as index pairs) and the
    removed voxels' flat indices."""
    from scipy import sparse

    shape = removed.shape
    flat = np.flatnonzero(removed)
    unknown = np.full(removed.size, -1, dtype=np.int64)
    unknown[flat] = np.arange(flat.size)
    coords = np.unravel_index(flat, shape)
    degree = np.zeros(flat.size)
    rows, cols, kept_rows, kept_voxels = [], [], [], []
    for axis in range(len(shape)):
        for step in (-1, 1):
            moved = list(coords)
            moved[axis] = coords[axis] + step
            inside = (moved[axis] >= 0) & (moved[axis] < shape[axis])
            neighbour = np.ravel_multi_index(tuple(m[inside] for m in moved), shape)
            source = np.flatnonzero(inside)
            degree[source] += 1
            is_removed = unknown[neighbour] >= 0
            rows.append(source[is_removed])
            cols.append(unknown[neighbour[is_removed]])
            kept_rows.append(source[~is_removed])
            kept_voxels.append(neighbour[~is_removed])
    r, c = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.csr_matrix((np.concatenate([degree, -np.ones(r.size)]),
                                (np.concatenate([np.arange(flat.size), r]), np.concatenate([np.arange(flat.size), c]))),
                               shape=(flat.size, flat.size))  # fmt: skip
    return matrix, np.concatenate(kept_rows), np.concatenate(kept_voxels), flat


def linear_imputation(
    image: torch.Tensor, removed: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The image with its ``removed`` voxels imputed by (noisy) linear imputation (see the module's equations).

    Args:
        image: ``(1, C, *spatial)``.
        removed: ``(*spatial)`` boolean, the voxels to impute (every channel).
        noise: the imputed values' noise as a share of the image's value range (ROAD's default 0.01).
        generator: a CPU generator for the noise.

    Returns:
        the imputed image, of ``image``'s shape, dtype and device.

    Example:
        >>> ramp = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 1, 6, 3, 3).clone()
        >>> removed = torch.zeros(6, 3, 3, dtype=torch.bool)
        >>> removed[2:4] = True
        >>> linear_imputation(ramp, removed)[0, 0, :, 1, 1].tolist()  # a ramp is harmonic: imputed exactly
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """
    if not has_scipy:
        raise ImportError("linear_imputation (ROAD) solves a sparse system with SciPy: pip install scipy.")
    from scipy import ndimage
    from scipy.sparse import diags
    from scipy.sparse.linalg import cg

    if image.ndim < 3 or image.shape[0] != 1 or tuple(removed.shape) != tuple(image.shape[2:]):
        raise ValueError(f"image (1, C, *spatial) and removed (*spatial) must match, got {tuple(image.shape)} and "
                         f"{tuple(removed.shape)}.")  # fmt: skip
    mask = removed.detach().cpu().numpy().astype(bool)
    values = image.detach().cpu().double().numpy()[0].reshape(image.shape[1], -1)
    result = values.copy()
    if mask.any():
        kept = ~mask.ravel()
        fill = values[:, kept].mean(1) if kept.any() else np.zeros(values.shape[0])
        matrix, kept_rows, kept_voxels, flat = _laplace_system(mask)
        # groups of removed voxels without a kept neighbour have no boundary: they take the kept mean
        groups, _ = ndimage.label(mask)
        anchored = np.isin(groups.ravel()[flat], np.unique(groups.ravel()[flat[kept_rows]]))
        solved = flat[anchored]
        sub = matrix[anchored][:, anchored].tocsr()
        jacobi = diags(1.0 / sub.diagonal())
        for ch in range(values.shape[0]):
            rhs = np.bincount(kept_rows, weights=values[ch, kept_voxels], minlength=flat.size)[anchored]
            result[ch, flat] = fill[ch]
            if solved.size:  # symmetric positive definite: conjugate gradients, to 1e-12 of the right-hand side
                start = np.full(solved.size, fill[ch])
                result[ch, solved], _ = cg(sub, rhs, x0=start, rtol=1e-12, atol=0.0, M=jacobi, maxiter=20 * solved.size)
        if noise > 0:
            spread = float(values.max() - values.min())
            draws = torch.randn((values.shape[0], flat.size), generator=generator, dtype=torch.float64).numpy()
            result[:, flat] += noise * spread * draws
    out = torch.from_numpy(result.reshape(image.shape[1:]))[None]
    return out.to(device=image.device, dtype=image.dtype)


def road_curve(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    cam: torch.Tensor,
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    order: str = RoadOrder.MORF,
    noise: float = 0.01,
    seed: int = 0,
    normalize: bool = False,
) -> PerturbationCurve:
    """The ROAD curve of one image: the region score after removing a share ``fractions[i]`` of the voxels in the
    map's order and imputing them (:func:`linear_imputation`).

    The voxels are sorted by decreasing (``"morf"``) or increasing (``"lerf"``) map value, ties by voxel index, and
    the first ``round(f * V)`` removed (all channels of a voxel together). The noise is seeded per curve.

    Args:
        score_fn: maps ``(n, C, *spatial)`` images to ``(n,)`` scores, e.g. from
            :func:`~monai_segcam.metrics.region_score_fn`.
        image: ``(1, C, *spatial)``.
        cam: the map, with the image's spatial shape (``(1, 1, *spatial)``, ``(1, *spatial)`` or ``(*spatial)``).
        fractions: the removed shares in ``[0, 1]``.
        order: ``"morf"`` or ``"lerf"``.
        noise: the imputation noise as a share of the image's value range.
        seed: seeds the noise.
        normalize: divide the scores by the unperturbed image's score.

    Returns:
        :class:`~monai_segcam.metrics.PerturbationCurve` ``(fractions, scores)``; its
        :func:`~monai_segcam.metrics.auc` summarises it (MoRF: lower is better).

    Example:
        .. code-block:: python

            curve = road_curve(region_score_fn(net, cotangent), image, cam, order="morf")
            auc(curve.scores, curve.fractions)
    """
    kind = look_up_option(order, RoadOrder)
    spatial = tuple(image.shape[2:])
    n_vox = math.prod(spatial)
    if image.ndim < 3 or image.shape[0] != 1 or cam.numel() != n_vox or tuple(cam.shape[-len(spatial):]) != spatial:
        raise ValueError(f"image must be (1, C, *spatial) and cam one channel of its grid, got {tuple(image.shape)} "
                         f"and {tuple(cam.shape)}.")  # fmt: skip
    shares = torch.as_tensor([float(f) for f in fractions], dtype=torch.float64)
    if shares.numel() == 0 or bool(((shares < 0) | (shares > 1)).any()):
        raise ValueError(f"fractions must be shares in [0, 1], got {list(fractions)}.")
    values = cam.detach().reshape(-1).cpu().double()
    ranked = torch.sort(values, descending=kind == RoadOrder.MORF, stable=True).indices
    generator = torch.Generator().manual_seed(int(seed))
    scores = []
    with torch.no_grad():
        for share in shares.tolist():
            removed = torch.zeros(n_vox, dtype=torch.bool)
            removed[ranked[: round(share * n_vox)]] = True
            imputed = linear_imputation(image, removed.view(spatial), noise, generator)
            scores.append(score_fn(imputed).reshape(-1)[0].to(torch.float64).cpu())
    curve = torch.stack(scores)
    if normalize:
        reference = score_fn(image).reshape(-1)[0].to(torch.float64).cpu()
        if reference == 0:
            raise ValueError("cannot normalise the ROAD curve: the unperturbed image has a zero score.")
        curve = curve / reference
    return PerturbationCurve(fractions=shares, scores=curve)
