# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Ensembles and test-time flips: the exact CAM of the averaged, mirrored, stitched prediction."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM, mirror_flips, resolve_layers

ROI, OVERLAP = (16, 16, 12), 0.5


def member(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).double().eval()


def ensemble_output(nets, flips):
    """The deployed prediction of one window: mean over members and flips of the flipped-back outputs."""

    def predict(window):
        outs = [torch.flip(net(torch.flip(window, [2 + a for a in f])), [2 + a for a in f]) for net in nets for f in flips]
        return torch.stack(outs).mean(0)

    return predict


def reference_hirescam(nets, flips, x, cls, layer, mode):
    """Autograd through MONAI's ``sliding_window_inference`` of the ensemble: every call of the layer (per window,
    member and flip) recorded, ``S = sum(mask * Y_c)`` differentiated with ``.backward()``, each term's
    ``sum_k G A`` flipped back, upsampled to the window and added at the window's place."""
    calls = []
    handles = []
    for net in nets:
        module = dict(net.named_modules())[resolve_layers(net, layer)[0].module_name]

        def hook(_m, _i, out):
            if torch.is_grad_enabled():
                out.retain_grad()
                calls.append(out)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            pred = sliding_window_inference(x, ROI, 1, ensemble_output(nets, flips), OVERLAP, mode)
        mask = (pred.argmax(1, keepdim=True) == cls).double()
        y = sliding_window_inference(x, ROI, 1, ensemble_output(nets, flips), OVERLAP, mode)
        (y[:, cls : cls + 1] * mask).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        for net in nets:
            net.zero_grad(set_to_none=True)
    from monai_segcam.cam import window_slices

    _, slices = window_slices(x.shape[2:], ROI, (OVERLAP,) * 3)
    terms = [f for _net in nets for f in flips]
    assert len(calls) == len(slices) * len(terms)
    total = torch.zeros_like(x)
    for w, window in enumerate(slices):
        for t, f in enumerate(terms):
            a = calls[w * len(terms) + t]
            raw = torch.flip((a.grad * a).sum(1, keepdim=True), [2 + d for d in f])
            total[(..., *window)] += F.interpolate(raw, size=ROI, mode="trilinear", align_corners=False)[0]
    return total.detach()


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("layer", ["pre_head", "bottleneck"])
def test_ensemble_with_flips_equals_autograd_through_the_stitched_prediction(mode, layer):
    nets = [member(0), member(1)]
    flips = [(), (0,), (2,), (0, 2)]
    x = torch.randn(1, 1, 24, 20, 16, dtype=torch.float64)
    cam = SlidingWindowSegCAM(nets, ROI, layers=layer, overlap=OVERLAP, mode=mode, flips=flips, relu=False)
    got = cam(x, classes=1).map.as_tensor()
    expected = reference_hirescam(nets, flips, x, 1, layer, mode)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
    # the prediction the region came from is the ensemble's stitched prediction
    with torch.no_grad():
        pred = sliding_window_inference(x, ROI, 1, ensemble_output(nets, flips), OVERLAP, mode)
    torch.testing.assert_close(cam(x, classes=1).prediction, pred)
    torch.testing.assert_close(cam.predict(x), pred)


def test_whole_volume_ensemble_with_mirroring_equals_one_window():
    nets = [member(2), member(3)]
    x = torch.randn(1, 1, 16, 16, 12, dtype=torch.float64)
    flips = mirror_flips((0, 1, 2))
    assert len(flips) == 8
    whole = SegCAM(nets, layers=["bottleneck", "pre_head"], flips=flips)(x, classes=[1, 2])
    window = SlidingWindowSegCAM(nets, (16, 16, 12), layers=["bottleneck", "pre_head"], flips=flips)(x, classes=[1, 2])
    for key in ("bottleneck", "pre_head"):
        torch.testing.assert_close(whole[key], window[key])


@pytest.mark.parametrize("method", ["hirescam", "gradcam", "xgradcam", "gradcampp", "layercam", "eigencam"])
def test_one_member_without_flips_is_the_plain_cam_and_identical_members_change_nothing(method):
    net = member(4)
    x = torch.randn(1, 1, 24, 20, 16, dtype=torch.float64)
    kwargs = {"layers": ["bottleneck", "pre_head"], "method": method, "overlap": OVERLAP, "mode": "gaussian"}
    plain = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[1, 2])
    listed = SlidingWindowSegCAM([net], ROI, flips=[()], **kwargs)(x, classes=[1, 2])
    twice = SlidingWindowSegCAM([net, copy.deepcopy(net)], ROI, **kwargs)(x, classes=[1, 2])
    for key in plain:
        scale = float(plain[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(listed[key], plain[key], rtol=0, atol=0)
        torch.testing.assert_close(twice[key], plain[key], rtol=1e-8, atol=1e-8 * scale)


def test_flip_of_a_mirror_symmetric_network_changes_nothing():
    """A 1x1x1-conv network commutes with flips: every flipped term equals the plain one, so the CAM of the mirrored
    prediction equals the plain CAM, for element-wise and global-weight rules."""
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1)).double().eval()
    x = torch.randn(1, 1, 12, 10, 8, dtype=torch.float64)
    for method in ("hirescam", "gradcam", "xgradcam"):
        plain = SegCAM(net, layers="1", method=method)(x, classes=[0, 2]).map
        mirrored = SegCAM(net, layers="1", method=method, flips=mirror_flips((0, 1, 2)))(x, classes=[0, 2]).map
        torch.testing.assert_close(mirrored, plain)


def test_bad_flips_and_members_are_rejected():
    net = member(5)
    with pytest.raises(ValueError, match="repeat an axis"):
        SegCAM(net, flips=[(0,), (0,)])
    with pytest.raises(ValueError, match="flips is empty"):
        SegCAM(net, flips=[])
    with pytest.raises(TypeError, match="non-empty sequence"):
        SegCAM([])


def reference_scorecam(nets, flips, layer, x, cls, region, mode):
    """Score-CAM of the ensemble's mirrored prediction with MONAI's ``sliding_window_inference``: per member, the
    layer's activations averaged over its flips (each flipped back), upsampled and blended; per channel, the region's
    mean logit of the ensemble prediction of the input masked by the min-max normalised channel; softmax over the
    member's channels; the members' weighted sums averaged, ReLU."""
    predict = ensemble_output(nets, flips)
    total = 0
    for net in nets:
        module = dict(net.named_modules())[resolve_layers(net, layer)[0].module_name]
        store: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda _m, _i, out, store=store: store.__setitem__("a", out))

        def member_activations(window, net=net, store=store):
            outs = []
            for f in flips:
                net(torch.flip(window, [2 + a for a in f]))
                up = F.interpolate(store["a"], size=ROI, mode="trilinear", align_corners=False)
                outs.append(torch.flip(up, [2 + a for a in f]))
            return torch.stack(outs).mean(0)

        try:
            with torch.no_grad():
                acts = sliding_window_inference(x, ROI, 1, member_activations, OVERLAP, mode)
        finally:
            handle.remove()
        flat = acts.flatten(2)
        low, high = flat.min(-1).values[..., None, None, None], flat.max(-1).values[..., None, None, None]
        masks = (acts - low) / (high - low)
        with torch.no_grad():
            scores = torch.stack([
                (sliding_window_inference(x * masks[:, k : k + 1], ROI, 1, predict, OVERLAP, mode)[:, cls] * region[:, 0])
                .sum()  # the region's summed score (score_reduction="sum", the default)
                for k in range(acts.shape[1])
            ])  # fmt: skip
        total = total + torch.einsum("k,bk...->b...", torch.softmax(scores, 0), acts)[:, None]
    return torch.relu(total / len(nets))


def test_scorecam_of_an_ensemble_with_flips_equals_monai_stitched_reference():
    nets = [member(0), member(1)]
    flips = [(), (0,)]
    x = torch.randn(1, 1, 20, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    region = torch.zeros(1, 1, 20, 16, 12, dtype=torch.float64)
    region[..., 4:14, 3:12, 2:9] = 1
    cam = SlidingWindowSegCAM(nets, ROI, layers="bottleneck", method="scorecam", overlap=OVERLAP, mode="gaussian",
                              flips=flips, scorecam_batch_size=5)  # fmt: skip
    got = cam(x, classes=1, region=region).map.as_tensor()
    expected = reference_scorecam(nets, flips, "bottleneck", x, 1, region, "gaussian")
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)
    one = SlidingWindowSegCAM(nets[0], ROI, layers="bottleneck", method="scorecam", overlap=OVERLAP, mode="gaussian")
    twice = SlidingWindowSegCAM([nets[0], copy.deepcopy(nets[0])], ROI, layers="bottleneck", method="scorecam",
                                overlap=OVERLAP, mode="gaussian")  # fmt: skip
    torch.testing.assert_close(twice(x, classes=1, region=region).map, one(x, classes=1, region=region).map)
