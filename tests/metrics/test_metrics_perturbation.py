# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from scipy import ndimage

from monai_segcam.metrics import auc, gaussian_blur, perturbation_curve, region_score_fn

SPATIAL = (6, 7, 8)


def _linear_setup(seed: int = 0):
    """A 1x1x1-conv "network" x -> w.x, an image, and a whole-volume cotangent: S(x) = sum_v w.x(v)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Conv3d(2, 1, kernel_size=1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(net.weight.shape, generator=g, dtype=torch.float64))
    image = torch.randn(1, 2, *SPATIAL, generator=g, dtype=torch.float64)
    cotangent = torch.ones(1, 1, *SPATIAL, dtype=torch.float64)
    return net, image, region_score_fn(net, cotangent)


def _baseline(image: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "zero":
        return torch.zeros_like(image)
    if kind == "mean":
        return image.mean(dim=(2, 3, 4), keepdim=True).expand_as(image)
    return gaussian_blur(image, 2.0)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_exact_contributions_are_optimal(baseline):
    net, image, score_fn = _linear_setup()
    # the exact contribution of each voxel to S relative to the baseline: w.(x - x_baseline)
    exact = (net.weight * (image - _baseline(image, baseline))).sum(1, keepdim=True)
    random_cam = torch.rand(exact.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = {"steps": exact.numel(), "baseline": baseline, "sigma": 2.0, "batch_size": 64}  # one voxel per step

    deletion = {
        name: perturbation_curve(score_fn, image, cam, mode="deletion", **kw).scores
        for name, cam in (("exact", exact), ("random", random_cam), ("anti", -exact))
    }
    area = {name: auc(curve) for name, curve in deletion.items()}
    assert area["exact"] < area["random"] < area["anti"]
    # deleting the smallest contributions first keeps the score above any other order at every step
    assert (deletion["anti"] >= deletion["random"] - 1e-9).all()
    assert (deletion["exact"] <= deletion["random"] + 1e-9).all()

    insertion = {
        name: perturbation_curve(score_fn, image, cam, mode="insertion", **kw).scores
        for name, cam in (("exact", exact), ("random", random_cam), ("anti", -exact))
    }
    area = {name: auc(curve) for name, curve in insertion.items()}
    assert area["exact"] > area["random"] > area["anti"]
    assert (insertion["anti"] <= insertion["random"] + 1e-9).all()

    # the score is additive: the deletion curve is S minus the running sum of the sorted contributions
    sorted_contrib = exact.flatten().sort(descending=True).values
    expected = score_fn(image) - torch.cat([torch.zeros(1, dtype=torch.float64), sorted_contrib.cumsum(0)])
    torch.testing.assert_close(deletion["exact"], expected)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_endpoints_and_fractions(baseline):
    _, image, score_fn = _linear_setup()
    cam = torch.rand(1, 1, *SPATIAL, dtype=torch.float64)
    full, base = score_fn(image)[0], score_fn(_baseline(image, baseline))[0]
    frac, dele = perturbation_curve(score_fn, image, cam, mode="deletion", steps=7, baseline=baseline, sigma=2.0)
    _, ins = perturbation_curve(score_fn, image, cam, mode="insertion", steps=7, baseline=baseline, sigma=2.0)
    assert frac.shape == dele.shape == ins.shape == (8,)
    assert frac[0] == 0 and frac[-1] == 1 and (frac.diff() > 0).all()
    assert dele[0] == full and dele[-1] == base
    assert ins[0] == base and ins[-1] == full
    _, norm = perturbation_curve(score_fn, image, cam, steps=7, baseline=baseline, sigma=2.0, normalize=True)
    torch.testing.assert_close(norm, dele / full)


def test_batch_size_does_not_change_results():
    _, image, score_fn = _linear_setup()
    cam = torch.rand(SPATIAL, dtype=torch.float64)  # spatial-only cams are accepted
    ref = perturbation_curve(score_fn, image, cam, mode="insertion", steps=10, batch_size=1)
    for batch_size in (3, 11, 50):
        out = perturbation_curve(score_fn, image, cam, mode="insertion", steps=10, batch_size=batch_size)
        torch.testing.assert_close(out.scores, ref.scores, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.fractions, ref.fractions)


def test_sliding_window_scoring_equals_whole_volume():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, kernel_size=1).double()  # receptive field of one voxel
    image = torch.randn(1, 1, 12, 10, 9, dtype=torch.float64)
    cotangent = torch.zeros(1, 3, 12, 10, 9, dtype=torch.float64)
    cotangent[:, 1] = net(image).argmax(1) == 1
    inferer = SlidingWindowInferer(roi_size=(6, 6, 6), sw_batch_size=2, overlap=0.5, mode="gaussian")
    whole, windowed = region_score_fn(net, cotangent), region_score_fn(net, cotangent, inferer=inferer)
    batch = torch.randn(3, 1, 12, 10, 9, dtype=torch.float64)
    torch.testing.assert_close(windowed(batch), whole(batch))
    cam = torch.rand(1, 1, 12, 10, 9)
    curves = [perturbation_curve(fn, image, cam, steps=5, batch_size=4) for fn in (whole, windowed)]
    torch.testing.assert_close(curves[1].scores, curves[0].scores)


def test_real_network_and_mode_restored():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    net.train()
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        net.eval()
        logits = net(image)
        net.train()
    cotangent = torch.zeros_like(logits)
    cotangent[:, 1] = logits.argmax(1) == 1
    score_fn = region_score_fn(net, cotangent)
    _frac, scores = perturbation_curve(score_fn, image, torch.rand(16, 16, 16), steps=4, baseline="mean")
    assert net.training
    assert scores.shape == (5,) and not scores.requires_grad
    torch.testing.assert_close(scores[0], (cotangent * logits).sum())


def test_gaussian_blur_matches_scipy_any_dims():
    x = torch.randn(2, 3, 9, 8, 7, dtype=torch.float64)
    sigma = (1.5, 0.0, 2.0)
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, *sigma), mode="nearest", truncate=4.0)
    torch.testing.assert_close(gaussian_blur(x, sigma), torch.from_numpy(expected))
    x4 = torch.randn(1, 1, 5, 4, 6, 3, dtype=torch.float64)  # four spatial dims, kernel wider than some axes
    expected = ndimage.gaussian_filter(x4.numpy(), sigma=(0, 0, 1.0, 1.0, 1.0, 1.0), mode="nearest", truncate=4.0)
    torch.testing.assert_close(gaussian_blur(x4, 1.0), torch.from_numpy(expected))
    const = torch.full((1, 1, 6, 6, 6), 3.0)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)
    with pytest.raises(ValueError):
        gaussian_blur(x, (1.0, 1.0))


def test_auc_trapezoid():
    torch.testing.assert_close(auc(torch.tensor([1.0, 0.5, 0.0])), torch.tensor(0.5))
    torch.testing.assert_close(auc(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 0.5, 1.0])), torch.tensor(0.75))
    torch.testing.assert_close(auc(torch.ones(4, 11)), torch.ones(4))  # batched over leading dims
    with pytest.raises(ValueError):
        auc(torch.ones(1))


def test_bad_inputs():
    net, image, score_fn = _linear_setup()
    cam = torch.rand(1, 1, *SPATIAL)
    with pytest.raises(ValueError, match="single"):
        perturbation_curve(score_fn, image.expand(2, -1, -1, -1, -1), cam)
    with pytest.raises(ValueError, match="spatial shape"):
        perturbation_curve(score_fn, image, torch.rand(1, 2, *SPATIAL))
    with pytest.raises(ValueError):
        perturbation_curve(score_fn, image, cam, mode="erase")
    with pytest.raises(ValueError):
        perturbation_curve(score_fn, image, cam, baseline="noise")
    with pytest.raises(ValueError, match="does not match"):
        region_score_fn(net, torch.ones(1, 2, *SPATIAL))(image)
    with pytest.raises(ValueError, match="zero score"):
        perturbation_curve(lambda x: torch.zeros(x.shape[0]), image, cam, normalize=True)
    with pytest.raises(ValueError, match="score_fn must return"):
        perturbation_curve(lambda x: torch.zeros(1), image, cam, batch_size=4)
