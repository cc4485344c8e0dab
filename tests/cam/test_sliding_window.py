# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SlidingWindowSegCAM against whole-volume SegCAM and against autograd through MONAI's own stitched forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM, Voxel, layer_presets

METHODS = ["gradcam", "hirescam", "xrescam", "gradcampp", "gradcampp_relu", "xgradcam", "layercam", "eigencam",
           "scorecam"]  # fmt: skip


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()


@pytest.mark.parametrize("target", ["logits", "probabilities"])
@pytest.mark.parametrize("method", METHODS)
def test_single_window_equals_whole_volume(method, target):
    """float64, so that the comparison tests the stitching and not float32 noise amplified by Grad-CAM++'s alpha."""
    net = tiny_unet().double()
    x = torch.randn(2, 1, 16, 20, 12, dtype=torch.float64)
    layers = ["bottleneck", "pre_head", "encoder.0"]
    whole = SegCAM(net, layers=layers, method=method, target=target)(x, classes=[0, 1, 2])
    for mode in ("constant", "gaussian"):
        sw = SlidingWindowSegCAM(
            net, roi_size=(16, 20, 12), layers=layers, method=method, target=target, mode=mode, sw_batch_size=2
        )
        windowed = sw(x, classes=[0, 1, 2])
        for key in layers:
            scale = float(whole[key].abs().max())
            assert scale > 0
            torch.testing.assert_close(windowed[key].as_tensor(), whole[key].as_tensor(), rtol=1e-5, atol=1e-5 * scale)


def reference_sliding_window(net, layer, x, roi, overlap, mode, cls, mask, method):
    """Autograd through MONAI's stitched forward: d(sum mask * Y_c)/dA_w for every window w (sw_batch_size 1)."""
    module = dict(net.named_modules())[layer]
    acts, coords = [], []

    def hook(_m, _i, out):
        leaf = out.detach().requires_grad_(True)
        acts.append(leaf)
        return leaf

    def predictor(window, coord):
        coords.append(coord)
        return net(window)

    handle = module.register_forward_hook(hook)
    try:
        y = sliding_window_inference(x, roi, 1, predictor, overlap, mode, with_coord=True)
    finally:
        handle.remove()
    grads = torch.autograd.grad((y[:, cls : cls + 1] * mask).sum(), acts)
    pad = [max(r - s, 0) for s, r in zip(x.shape[2:], roi)]
    padded = [s + p for s, p in zip(x.shape[2:], pad)]
    crop = (slice(None), slice(None), *(slice(p // 2, p // 2 + s) for p, s in zip(pad, x.shape[2:])))
    if method == "hirescam":
        out = torch.zeros(x.shape[0], 1, *padded)
        for a, g, c in zip(acts, grads, coords):
            raw = (g * a.detach()).sum(1, keepdim=True)
            out[(c[0][0], slice(None), *c[0][2:])] += F.interpolate(raw, size=roi, mode="trilinear")
        return out[crop]
    # Seg-Grad-CAM: channel weights from all windows' gradients, then MONAI blends the weighted activations
    weights = sum(g.sum((2, 3, 4)) for g in grads) / grads[0][0, 0].numel()
    relu = method == "gradcampp_relu"  # the paper's variant: alpha and the map on ReLU(A)
    if method.startswith("gradcampp"):  # alpha's sum_u A runs over every window's positions
        total = sum((a.detach().clamp_min(0) if relu else a.detach()).sum((2, 3, 4)) for a in acts)[..., None, None, None]
        alphas = [torch.where(g != 0, g**2 / (2 * g**2 + total * g**3), 0.0) for g in grads]
        weights = sum((alpha * g.clamp_min(0)).sum((2, 3, 4)) for alpha, g in zip(alphas, grads))

    def weighted(window):
        store = {}
        h = module.register_forward_hook(lambda _m, _i, out: store.setdefault("a", out))
        try:
            net(window)
        finally:
            h.remove()
        raw = torch.einsum("bk...,k->b...", store["a"].clamp_min(0) if relu else store["a"], weights[0]).unsqueeze(1)
        return F.interpolate(raw, size=roi, mode="trilinear")

    with torch.no_grad():
        return sliding_window_inference(x, roi, 1, weighted, overlap, mode)


@pytest.mark.parametrize("method", ["hirescam", "gradcam", "gradcampp", "gradcampp_relu"])
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_multi_window_equals_autograd_through_monai_stitching(method, mode, overlap):
    net = tiny_unet()
    x = torch.randn(1, 1, 37, 29, 13)  # not divisible by window or stride; last dim smaller than the window
    roi = (16, 16, 16)
    mask = (torch.rand(1, 1, 37, 29, 13, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    if method == "gradcampp":  # alpha's pole (2 + G sum_u A = 0) amplifies float32 rounding
        net, x, mask = net.double(), x.double(), mask.double()
    layer = layer_presets(net)["pre_head" if method == "hirescam" else "bottleneck"]
    expected = reference_sliding_window(net, layer, x, roi, overlap, mode, 2, mask, method).relu()
    got = SlidingWindowSegCAM(net, roi, layers=layer, method=method, overlap=overlap, mode=mode, sw_batch_size=3)(
        x, classes=2, region=mask
    ).map
    assert expected.abs().max() > 0
    torch.testing.assert_close(got.as_tensor(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_aligned_with_sliding_window_inferer_prediction():
    net = tiny_unet()
    affine = torch.tensor([[0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 1.2, 3], [0, 0, 0, 1]], dtype=torch.float64)
    x = MetaTensor(torch.randn(1, 1, 40, 33, 27), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        pred = inferer(x, net)
    sw = SlidingWindowSegCAM.from_inferer(inferer, net, layers=["pre_head", "bottleneck"], method="hirescam")
    maps = sw(x, classes=[1, 2], pred=pred)
    for value in maps.values():
        assert value.shape[2:] == pred.shape[2:]
        torch.testing.assert_close(value.affine, pred.affine)
        assert value.meta["filename_or_obj"] == pred.meta["filename_or_obj"] == "case.nii.gz"
    # the prediction it computes itself is the inferer's: same maps with and without pred
    torch.testing.assert_close(sw(x, classes=[1, 2])["pre_head"], maps["pre_head"])


def count_forwards(net):
    calls = []
    handle = net.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    return calls, handle


def test_windows_outside_the_region_are_skipped():
    net = tiny_unet()
    x = torch.randn(1, 1, 48, 48, 48)
    sw = SlidingWindowSegCAM(net, roi_size=16, overlap=0.0, layers="pre_head", method="hirescam")
    calls, handle = count_forwards(net)
    maps = sw(x, classes=1, region=Voxel((20, 20, 20))).map
    handle.remove()
    assert sum(calls) == 2  # 27 windows: one probe for the output channels + the one window holding the voxel
    assert maps.abs().sum() > 0
    calls, handle = count_forwards(net)
    sw(x, classes=1, region="pred", pred=torch.zeros(1, 1, 48, 48, 48, dtype=torch.long))
    handle.remove()
    assert sum(calls) == 1  # class 1 predicted nowhere: no window touches M (one channel probe)


def test_given_prediction_costs_no_extra_pass_and_budget_recompute_is_exact():
    net = tiny_unet()
    x = torch.randn(1, 1, 40, 40, 24)
    inferer = SlidingWindowInferer(roi_size=(24, 24, 24), overlap=0.25)
    with torch.no_grad():
        pred = inferer(x, net)
    kept = SlidingWindowSegCAM.from_inferer(inferer, net, layers="bottleneck", method="gradcam")
    calls, handle = count_forwards(net)
    a = kept(x, classes=[1, 2], pred=pred)
    handle.remove()
    assert sum(calls) == 4  # 4 windows, one forward each: activations kept for phase 2
    recomputed = SlidingWindowSegCAM.from_inferer(
        inferer, net, layers="bottleneck", method="gradcam", activation_budget=0
    )
    calls, handle = count_forwards(net)
    b = recomputed(x, classes=[1, 2], pred=pred)
    handle.remove()
    assert sum(calls) == 8
    torch.testing.assert_close(a, b)


def test_progress_bar(capsys):
    net = tiny_unet()
    SlidingWindowSegCAM(net, roi_size=16, layers="pre_head", progress=True)(
        torch.randn(1, 1, 32, 32, 16), classes=1, region="all"
    ).map
    assert "CAM windows" in capsys.readouterr().err


def reference_scorecam(net, layer, x, roi, overlap, mode, classes, mask, target, cval):
    """Score-CAM stitched by MONAI itself: the layer's activations upsampled per window and blended by
    ``sliding_window_inference``, min-max normalised, one ``sliding_window_inference`` per masked input, softmax of the
    region's summed scores (the default score_reduction) over channels, weighted sum of the blended activations, ReLU."""
    module = dict(net.named_modules())[layer]
    store = {}
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        with torch.no_grad():
            acts = sliding_window_inference(
                x, roi, 1, lambda w: F.interpolate((net(w), store["a"])[1], size=roi, mode="trilinear"), overlap, mode,
                cval=cval,
            )  # fmt: skip
    finally:
        handle.remove()
    flat = acts.flatten(2)
    low, high = flat.min(-1).values[..., None, None, None], flat.max(-1).values[..., None, None, None]
    masks = (acts - low) / (high - low)
    scores = []
    for k in range(acts.shape[1]):
        with torch.no_grad():
            y = sliding_window_inference(x * masks[:, k : k + 1], roi, 1, net, overlap, mode, cval=cval)
        t = torch.softmax(y, 1) if target == "probabilities" else y
        scores.append(torch.stack([(t[:, c] * mask[:, 0]).sum((1, 2, 3)) for c in classes], -1))
    weights = torch.softmax(torch.stack(scores, 1), 1)  # (B, K, n)
    return torch.relu(torch.einsum("bkn,bk...->bn...", weights, acts))


@pytest.mark.parametrize("target", ["logits", "probabilities"])
@pytest.mark.parametrize(
    "shape, roi, overlap, mode",
    [
        ((20, 18, 13), (12, 12, 8), 0.25, "constant"),
        ((20, 18, 13), (12, 12, 8), 0.5, "gaussian"),
        ((20, 18, 6), (12, 12, 8), 0.25, "gaussian"),  # narrower than the window in z: padded with cval
    ],
)
def test_scorecam_matches_monai_stitched_reference(shape, roi, overlap, mode, target):
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 1, *shape)
    mask = torch.zeros(1, 1, *shape)
    mask[:, :, 3:11, 2:9, 1:5] = 1  # the windows far from it are skipped
    layer = "model.1.submodule"
    sw = SlidingWindowSegCAM(
        net, roi_size=roi, overlap=overlap, mode=mode, layers=layer, method="scorecam", target=target,
        scorecam_batch_size=3, sw_batch_size=2, cval=0.7,
    )  # fmt: skip
    got = sw(x, classes=[1, 2], region=mask).map
    expected = reference_scorecam(net, layer, x, roi, overlap, mode, [1, 2], mask, target, cval=0.7)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(got.as_tensor(), expected, rtol=1e-4, atol=1e-4 * scale)


def test_scorecam_runs_each_window_forward_once_for_its_masks():
    """The channels' masks come from one forward pass per window group (kept between channel batches), then one
    masked pass per channel batch and group: ``G + (K / batch) * G`` network calls (the probe of the output channels
    is the first group's pass, kept; recomputing the masks per channel batch would be ``2 (K / batch) G``)."""
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).eval()
    calls = []
    handle = net.register_forward_pre_hook(lambda _m, _i: calls.append(1))
    try:
        sw = SlidingWindowSegCAM(net, roi_size=(12, 12, 8), overlap=0.25, layers="model.1.submodule",
                                 method="scorecam", scorecam_batch_size=2)  # fmt: skip
        x = torch.randn(1, 1, 20, 18, 13)
        sw(x, classes=1, region="all")
    finally:
        handle.remove()
    groups = len(sw.grid(x.shape[2:]).slices)
    channels = 8  # the layer's output channels
    assert len(calls) == groups + (channels // 2) * groups
