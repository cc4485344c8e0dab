# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Round-off is zero: maps at float round-off of their terms' scale come back as exact zeros with one warning, real
maps are untouched (cam/roundoff.py and the engines), and normalize_cam never stretches round-off."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from monai.networks.nets import SegResNet
from torch import nn

from monai_segcam import SegCAM, SlidingWindowSegCAM, normalize_cam
from monai_segcam.cam.roundoff import is_roundoff, roundoff_tolerance


def segresnet(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8).eval().to(dtype)


def explain(engine, x, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine(x, **kwargs)
    return result, [str(w.message) for w in caught if "round-off" in str(w.message)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_segresnet_pre_head_gradcam_is_exact_zeros_with_one_warning(dtype, monkeypatch):
    """SegResNet's head starts with a group norm of one channel per group: the gradients' spatial sums at
    ``pre_head`` (and ``up_layers.1``) are exactly zero, so Seg-Grad-CAM's exact map is zero there; floating point
    gives round-off, which comes back as exact zeros. The decoder's first stage is a real map, untouched."""
    net = segresnet(dtype)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)).to(dtype)
    layers = ["pre_head", "up_layers.1", "up_layers.0"]
    cam = SegCAM(net, layers=layers, method="gradcam", relu=False)
    result, messages = explain(cam, x, classes=[1, 2], region="all")
    monkeypatch.setattr("monai_segcam.cam.roundoff.ROUNDOFF_FACTOR", 0.0)  # detection off: the maps as computed
    raw, none = explain(cam, x, classes=[1, 2], region="all")
    assert not none
    for key in ("pre_head", "up_layers.1"):
        assert raw[key].abs().max() > 0  # round-off, ...
        assert raw[key].abs().max() < 2e3 * torch.finfo(dtype).eps  # 1.6e-5 in float32, 2e-16 in float64
        assert not result[key].any()  # ... returned as exact zeros
        assert not normalize_cam(result[key]).any()  # and never stretched into a picture
    torch.testing.assert_close(result["up_layers.0"], raw["up_layers.0"], rtol=0, atol=0)  # a real map, untouched
    assert result["up_layers.0"].abs().max() > 1e-3
    assert len(messages) == 1  # once per call, naming the layers, classes and why
    assert "'pre_head' (up_layers.2) class 1" in messages[0] and "'up_layers.1' (up_layers.1) class 2" in messages[0]
    assert "up_layers.0" not in messages[0] and "normalisation layer" in messages[0]


def test_sliding_windows_detect_round_off_with_the_largest_window_scale():
    net = segresnet()
    x = torch.randn(1, 1, 40, 32, 32, generator=torch.Generator().manual_seed(1))
    for method in ("gradcam", "hirescam"):
        cam = SlidingWindowSegCAM(net, (32, 32, 32), layers=["pre_head", "up_layers.0"], method=method, relu=False)
        result, messages = explain(cam, x, classes=1, region="all")
        assert bool(result["pre_head"].any()) == (method == "hirescam")  # HiRes is real at pre_head
        assert result["up_layers.0"].abs().max() > 1e-3
        assert len(messages) == (method == "gradcam")


def test_a_local_rule_at_round_off_is_zeroed(monkeypatch):
    """Two channels A = (3x, x) and a head (1/3, -1): HiRes' exact map ``m (3x/3 - x)`` is zero, float32 leaves
    the rounding of 1/3."""
    net = nn.Sequential(OrderedDict(layer=nn.Conv3d(1, 2, 1, bias=False), head=nn.Conv3d(2, 1, 1, bias=False)))
    with torch.no_grad():
        net.layer.weight.copy_(torch.tensor([3.0, 1.0]).view(2, 1, 1, 1, 1))
        net.head.weight.copy_(torch.tensor([1 / 3, -1.0]).view(1, 2, 1, 1, 1))
    x = torch.rand(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) + 0.5
    cam = SegCAM(net, layers="layer", method="hirescam", relu=False)
    result, messages = explain(cam, x, classes=0, region="all")
    assert not result.map.any() and len(messages) == 1 and "class 0" in messages[0]
    monkeypatch.setattr("monai_segcam.cam.roundoff.ROUNDOFF_FACTOR", 0.0)
    raw = cam(x, classes=0, region="all").map
    assert 0 < raw.abs().max() <= 4 * torch.finfo(torch.float32).eps * 1.5  # float32 rounding of x <= 1.5


def test_is_roundoff_is_relative_to_the_terms_scale():
    tol = roundoff_tolerance(torch.float32)
    peaks, scales = torch.tensor([0.5 * tol, 2 * tol, 0.0, 1e-30]), torch.tensor([1.0, 1.0, 1.0, 1e-20])
    assert is_roundoff(peaks, scales, torch.float32).tolist() == [True, False, False, True]
    assert roundoff_tolerance(torch.float64) < 1e-12 < tol < 1e-3


def test_normalize_cam_never_stretches_round_off():
    real = torch.rand(1, 2, 5, 5, 5, generator=torch.Generator().manual_seed(0))
    noisy_constant = 1.0 + 1e-7 * torch.rand(1, 1, 5, 5, 5, generator=torch.Generator().manual_seed(1))
    cams = torch.cat([real, noisy_constant, torch.zeros(1, 1, 5, 5, 5)], 1)
    shown = normalize_cam(cams)
    assert not shown[:, 2:].any()  # constant up to round-off, and all zero: never stretched
    torch.testing.assert_close(shown[:, :2], normalize_cam(real))
    assert shown[:, :2].amax((2, 3, 4)).eq(1).all()
    assert not normalize_cam(noisy_constant, mode="percentile").any()
