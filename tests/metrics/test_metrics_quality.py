# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Sparseness, complexity, max-sensitivity, random logit and ROAD against their formulas on small known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from monai_segcam.metrics import (
    complexity,
    linear_imputation,
    max_sensitivity,
    random_logit,
    region_score_fn,
    road_curve,
    sparseness,
)


def _gini_pairwise(a: np.ndarray) -> float:
    """The Gini index by its definition: mean absolute difference over twice the mean."""
    a = np.abs(a.ravel())
    return float(np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size**2 * a.mean()))


def test_sparseness_is_the_gini_index():
    g = torch.Generator().manual_seed(0)
    cam = torch.randn(2, 3, 4, 5, 3, generator=g, dtype=torch.float64)
    got = sparseness(cam)
    expected = [[_gini_pairwise(cam[b, n].numpy()) for n in range(3)] for b in range(2)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert float(sparseness(torch.ones(1, 1, 3, 3, 3))) == pytest.approx(0.0, abs=1e-15)
    single = torch.zeros(1, 1, 3, 3, 3)
    single[0, 0, 1, 2, 0] = -4.0  # magnitudes: the sign does not matter
    assert float(sparseness(single)) == pytest.approx(1 - 1 / 27)
    with pytest.warns(UserWarning, match="zeros"):
        assert float(sparseness(torch.zeros(1, 1, 2, 2, 2))) == 0.0


def test_complexity_is_the_entropy_of_the_fractional_contributions():
    g = torch.Generator().manual_seed(1)
    cam = torch.randn(1, 2, 4, 4, 4, generator=g, dtype=torch.float64)
    cam[0, 0, 0] = 0.0  # zero voxels contribute nothing
    got = complexity(cam)
    expected = [stats.entropy(np.abs(cam[0, n].numpy().ravel())) for n in range(2)]
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-12)
    single = torch.zeros(1, 1, 4, 4, 4)
    single[0, 0, 1, 1, 1] = 2.0
    assert float(complexity(single)) == 0.0
    with pytest.warns(UserWarning, match="zeros"):
        assert float(complexity(torch.zeros(1, 1, 4, 4, 4))) == pytest.approx(math.log(64))


def test_max_sensitivity_of_linear_explanations():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 2, 4, 5, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 2, 1, 1, 1, generator=g, dtype=torch.float64)
    # e(x) = w * x: e(x + d) - e(x) = w * d, with the noise the metric draws (uniform in [-r, r], r = radius * range)
    got = max_sensitivity(lambda x: weight * x, image, n_samples=5, radius=0.1, seed=3)
    draws = torch.Generator().manual_seed(3)
    width = 0.1 * float(image.max() - image.min())
    norms = [(weight * (torch.rand(image.shape, generator=draws, dtype=torch.float64) * 2 - 1) * width).norm()
             for _ in range(5)]  # fmt: skip
    assert float(got) == pytest.approx(float(max(norms) / (weight * image).norm()), rel=1e-12)
    assert float(max_sensitivity(lambda x: 3 * weight * x, image, n_samples=5, radius=0.1, seed=3)) == pytest.approx(
        float(got), rel=1e-12
    )  # relative: the map's scale does not matter
    assert float(max_sensitivity(lambda x: torch.ones(3), image)) == 0.0  # a map noise does not move
    assert float(max_sensitivity(lambda x: weight * x, image, radius=0.0)) == 0.0
    with pytest.raises(ValueError, match="n_samples"):
        max_sensitivity(lambda x: x, image, n_samples=0)


def test_random_logit():
    g = torch.Generator().manual_seed(4)
    maps = {c: torch.randn(1, 1, 4, 4, 4, generator=g, dtype=torch.float64) for c in range(4)}
    check = random_logit(lambda c: maps[c], 1, range(4), seed=5)
    assert check.other in (0, 2, 3)
    assert check == random_logit(lambda c: maps[c], 1, range(4), seed=5)  # seeded
    a, b = maps[1].abs().ravel().numpy(), maps[check.other].abs().ravel().numpy()
    assert check.similarity == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    rank = random_logit(lambda c: maps[c], 1, range(4), seed=5, similarity="spearman", absolute=False)
    assert rank.similarity == pytest.approx(stats.spearmanr(maps[1].ravel(), maps[rank.other].ravel())[0], abs=1e-12)
    assert random_logit(lambda c: maps[0], 1, [1, 2], seed=0).similarity == pytest.approx(1.0)  # ignores the class
    assert {random_logit(lambda c: maps[c], 0, range(4), seed=s).other for s in range(20)} == {1, 2, 3}
    with pytest.raises(ValueError, match="other than"):
        random_logit(lambda c: maps[c], 1, [1])


def _jacobi(image: np.ndarray, removed: np.ndarray, sweeps: int = 20000) -> np.ndarray:
    """Each removed voxel the mean of its face neighbours inside the volume, by fixed-point sweeps (float64)."""
    u = np.where(removed, image[~removed].mean(), image)
    shape = image.shape
    for _ in range(sweeps):
        total, count = np.zeros(shape), np.zeros(shape)
        for axis in range(3):
            for step in (-1, 1):
                shifted = np.roll(u, step, axis)
                valid = np.ones(shape, dtype=bool)
                index = [slice(None)] * 3
                index[axis] = 0 if step == 1 else -1
                valid[tuple(index)] = False
                total += np.where(valid, shifted, 0.0)
                count += valid
        new = np.where(removed, total / count, image)
        if np.abs(new - u).max() < 1e-14:
            break
        u = new
    return u


def test_linear_imputation_solves_the_laplace_equation():
    g = torch.Generator().manual_seed(6)
    image = torch.rand(1, 2, 5, 6, 4, generator=g, dtype=torch.float64)
    removed = torch.rand(5, 6, 4, generator=g) < 0.4
    got = linear_imputation(image, removed)
    for ch in range(2):
        np.testing.assert_allclose(got[0, ch].numpy(), _jacobi(image[0, ch].numpy(), removed.numpy()), atol=1e-10)
    # a linear ramp along the first axis is harmonic: imputed exactly away from that axis' faces
    ramp = (0.5 * torch.arange(7.0, dtype=torch.float64) - 1).view(1, 1, 7, 1, 1).expand(1, 1, 7, 4, 5).clone()
    hole = torch.zeros(7, 4, 5, dtype=torch.bool)
    hole[1:6, 1:3, :] = True
    torch.testing.assert_close(linear_imputation(ramp, hole), ramp, rtol=0, atol=1e-12)
    # every voxel removed: nothing to impute from, the kept mean of nothing is 0
    assert float(linear_imputation(ramp, torch.ones(7, 4, 5, dtype=torch.bool)).abs().max()) == 0.0
    # the noise: N(0, (noise * range)^2) on the removed voxels only, from the generator given
    noisy = linear_imputation(image, removed, noise=0.05, generator=torch.Generator().manual_seed(7))
    draws = torch.randn((2, int(removed.sum())), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    spread = float(image.max() - image.min())
    torch.testing.assert_close((noisy - got)[0][:, removed], 0.05 * spread * draws)
    assert bool((noisy - got)[0][:, ~removed].eq(0).all())


def test_road_curve_on_a_linear_network():
    g = torch.Generator().manual_seed(8)
    net = torch.nn.Conv3d(1, 1, kernel_size=1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(1.0)
    image = torch.rand(1, 1, 4, 5, 6, generator=g, dtype=torch.float64)
    score_fn = region_score_fn(net, torch.ones(1, 1, 4, 5, 6, dtype=torch.float64))
    cam = torch.rand(4, 5, 6, generator=g, dtype=torch.float64)
    fractions = (0.0, 0.25, 0.5, 1.0)
    for order, descending in (("morf", True), ("lerf", False)):
        curve = road_curve(score_fn, image, cam, fractions, order=order, noise=0.0)
        ranked = torch.sort(cam.ravel(), descending=descending, stable=True).indices
        for f, score in zip(fractions, curve.scores.tolist()):
            removed = torch.zeros(120, dtype=torch.bool)
            removed[ranked[: round(f * 120)]] = True
            expected = _jacobi(image[0, 0].numpy(), removed.view(4, 5, 6).numpy()).sum() if f < 1 else 0.0
            assert score == pytest.approx(expected, abs=1e-9)
        torch.testing.assert_close(curve.fractions, torch.tensor(fractions, dtype=torch.float64))
    assert float(road_curve(score_fn, image, cam, (0.0,), normalize=True).scores[0]) == pytest.approx(1.0)
    seeded = [road_curve(score_fn, image, cam, (0.5,), seed=1).scores for _ in range(2)]
    torch.testing.assert_close(*seeded)
    with pytest.raises(ValueError, match="morf"):
        road_curve(score_fn, image, cam, order="most")
    with pytest.raises(ValueError, match="fractions"):
        road_curve(score_fn, image, cam, fractions=(1.5,))
