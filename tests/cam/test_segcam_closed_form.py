# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""CAMs of networks whose answer is known in closed form: 1x1x1 convolutions around the explained layer.

With ``A = conv1(x)`` and logits ``y = W2 A + b2`` (1x1x1 convs), the region score of class c is
``S = sum_v M(v) y_c(v)`` and ``G^k(v) = M(v) W2[c, k]`` exactly, so every rule has a formula written here.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from monai_segcam import SegCAM
from monai_segcam.cam.regions import class_masks

torch.set_default_dtype(torch.float32)


def linear_net(k: int = 5, c: int = 3) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(OrderedDict(layer=nn.Conv3d(2, k, 1), head=nn.Conv3d(k, c, 1))).double()
    return net


@pytest.fixture
def case():
    net = linear_net()
    x = torch.randn(2, 2, 6, 7, 5, dtype=torch.float64)
    with torch.no_grad():
        acts = net.layer(x)
        logits = net.head(acts)
    return net, x, acts, logits


def region(logits, c):
    return class_masks(logits, [c]).double()  # (B, 1, *S)


def test_hirescam_closed_form_and_completeness(case):
    net, x, _acts, logits = case
    c = 1
    m = region(logits, c)
    maps = SegCAM(net, layers="layer", method="hirescam", relu=False)(x, classes=c).map
    expected = m * (logits[:, c : c + 1] - net.head.bias[c])
    torch.testing.assert_close(maps.as_tensor(), expected, rtol=1e-10, atol=1e-10)
    # completeness: the map sums to the region score minus the head's bias term
    score = (m * logits[:, c : c + 1]).flatten(1).sum(1)
    bias_term = net.head.bias[c] * m.flatten(1).sum(1)
    torch.testing.assert_close(maps.flatten(1).sum(1), score - bias_term, rtol=1e-10, atol=1e-10)


def test_gradcam_closed_form(case):
    net, x, _acts, logits = case
    c = 2
    m = region(logits, c)
    maps = SegCAM(net, layers="layer", method="gradcam", relu=False)(x, classes=c).map
    mean_m = m.flatten(1).mean(1).view(-1, 1, 1, 1, 1)
    expected = mean_m * (logits[:, c : c + 1] - net.head.bias[c])
    torch.testing.assert_close(maps.as_tensor(), expected, rtol=1e-10, atol=1e-10)


def test_layercam_xgradcam_gradcampp_closed_form(case):
    net, x, acts, logits = case
    c = 0
    m = (torch.rand(logits[:, :1].shape, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    w2 = net.head.weight[:, :, 0, 0, 0][c].detach()  # (K,)
    grads = m * w2.view(1, -1, 1, 1, 1)  # (B, K, *S)
    layercam = (grads.clamp_min(0) * acts).sum(1, keepdim=True)
    xgrad_w = (acts * grads).flatten(2).sum(-1) / (acts.flatten(2).sum(-1) + 1e-7)
    xgradcam = (xgrad_w[..., None, None, None] * acts).sum(1, keepdim=True)
    g2, g3 = grads**2, grads**3
    alpha = g2 / (2 * g2 + acts.flatten(2).sum(-1)[..., None, None, None] * g3)  # the paper's form, no epsilon
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    pp_w = (alpha * grads.clamp_min(0)).flatten(2).sum(-1)
    gradcampp = (pp_w[..., None, None, None] * acts).sum(1, keepdim=True)
    for method, expected in (("layercam", layercam), ("xgradcam", xgradcam), ("gradcampp", gradcampp)):
        maps = SegCAM(net, layers="layer", method=method, relu=False)(x, classes=c, region=m).map
        assert expected.abs().max() > 0
        torch.testing.assert_close(maps.as_tensor(), expected, rtol=1e-8, atol=1e-10, msg=method)


def test_xrescam_pool_one_is_hirescam_and_pooling_formula(case):
    net, x, _acts, _logits = case
    hires = SegCAM(net, layers="layer", method="hirescam", relu=False)(x, classes=1).map
    xres1 = SegCAM(net, layers="layer", method="xrescam", pool_size=1, relu=False)(x, classes=1).map
    torch.testing.assert_close(xres1, hires)
    # mean pooling of an all-ones region: G is constant per channel, so any pool size gives HiRes
    ones = SegCAM(net, layers="layer", method="hirescam", relu=False)(x, classes=1, region="all").map
    xres_mean = SegCAM(net, layers="layer", method="xrescam", pool_size=3, pool_mode="mean", relu=False)
    torch.testing.assert_close(xres_mean(x, classes=1, region="all").map, ones)


def test_xrescam_max_pooling_spreads_gradient_over_blocks():
    """A single-voxel region: max pooling of the gradient copies it over the 2x2x2 block (where W2 > 0)."""
    net = nn.Sequential(OrderedDict(layer=nn.Conv3d(1, 1, 1, bias=False), head=nn.Conv3d(1, 1, 1, bias=False))).double()
    with torch.no_grad():
        net.layer.weight.fill_(1.0)
        net.head.weight.fill_(2.0)
    x = torch.rand(1, 1, 4, 4, 4, dtype=torch.float64) + 0.5
    from monai_segcam import Voxel

    maps = SegCAM(net, layers="layer", method="xrescam", pool_size=2, relu=False)(x, classes=0, region=Voxel((1, 2, 3))).map
    expected = torch.zeros_like(x)
    expected[:, :, 0:2, 2:4, 2:4] = 2.0 * x[:, :, 0:2, 2:4, 2:4]
    torch.testing.assert_close(maps.as_tensor(), expected)


def test_eigencam_recovers_rank_one_pattern():
    """Activations A^k = a_k f(v) + b_k: the first principal component projects back to f - mean(f)."""
    net = nn.Sequential(OrderedDict(layer=nn.Conv3d(1, 4, 1), head=nn.Conv3d(4, 2, 1))).double()
    x = torch.rand(1, 1, 6, 6, 6, dtype=torch.float64)
    maps = SegCAM(net, layers="layer", method="eigencam", relu=False)(x, classes=[0, 1], region="all").map
    f = x - x.mean()
    a = net.layer.weight.detach().flatten()
    expected = f * a.norm() * torch.sign(a.sum())
    torch.testing.assert_close(maps[:, :1].as_tensor(), expected, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(maps[:, 1:], maps[:, :1])  # class-agnostic


def test_scorecam_identical_channels_equal_weights():
    """K identical channels get softmax weights 1/K each, so the map is one channel's activation."""
    net = nn.Sequential(OrderedDict(layer=nn.Conv3d(1, 6, 1), head=nn.Conv3d(6, 2, 1))).double()
    with torch.no_grad():
        net.layer.weight.fill_(0.7)
        net.layer.bias.fill_(0.1)
    x = torch.rand(1, 1, 5, 6, 4, dtype=torch.float64)
    maps = SegCAM(net, layers="layer", method="scorecam", relu=False, scorecam_batch_size=4)(x, classes=1, region="all").map
    torch.testing.assert_close(maps.as_tensor(), 0.7 * x + 0.1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scorecam_reductions_equal_their_formula(case, reduction):
    """Score-CAM: mask_k = min-max normalised A^k, score_k = the region's mean or summed class-c logit of the input
    times mask_k, w = softmax_k(score), map = sum_k w_k A^k."""
    net, x, acts, logits = case
    c = 2
    m = region(logits, c)
    flat = acts.flatten(2)
    low, high = flat.min(-1).values[..., None, None, None], flat.max(-1).values[..., None, None, None]
    masks = (acts - low) / (high - low)  # (B, K, *S)
    with torch.no_grad():
        masked = torch.stack([net(x * masks[:, k : k + 1])[:, c] for k in range(acts.shape[1])], 1)  # (B, K, *S)
    scores = (masked * m).flatten(2).sum(-1)
    scores = scores / m.flatten(1).sum(1, keepdim=True) if reduction == "mean" else scores
    weights = torch.softmax(scores, dim=1)
    expected = (weights[..., None, None, None] * acts).sum(1, keepdim=True)
    cam = SegCAM(net, layers="layer", method="scorecam", relu=False, scorecam_batch_size=2, score_reduction=reduction)
    torch.testing.assert_close(cam(x, classes=c).map.as_tensor(), expected, rtol=1e-10, atol=1e-10)
    other = SegCAM(net, layers="layer", method="scorecam", relu=False,
                   score_reduction="sum" if reduction == "mean" else "mean")(x, classes=c).map  # fmt: skip
    assert not torch.allclose(other.as_tensor(), expected)


def test_probability_target_matches_autograd(case):
    net, x, acts, logits = case
    c = 1
    m = region(logits, c)
    a = acts.clone().requires_grad_(True)
    score = (m * torch.softmax(net.head(a), 1)[:, c : c + 1]).sum()
    (grad,) = torch.autograd.grad(score, a)
    expected = (grad * acts).sum(1, keepdim=True)
    maps = SegCAM(net, layers="layer", method="hirescam", target="probabilities", relu=False)(x, classes=c).map
    torch.testing.assert_close(maps.as_tensor(), expected, rtol=1e-10, atol=1e-12)
    a = acts.clone().requires_grad_(True)
    score = (m * torch.sigmoid(net.head(a))[:, c : c + 1]).sum()
    (grad,) = torch.autograd.grad(score, a)
    sig = SegCAM(net, layers="layer", method="hirescam", target="probabilities", multi_label=True, relu=False)
    torch.testing.assert_close(sig(x, classes=c, region=m).map.as_tensor(), (grad * acts).sum(1, keepdim=True))
