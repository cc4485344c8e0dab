# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The prediction and the CAM from one forward pass: the same maps as the two-pass path and as autograd."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from test_segcam_networks import ARCHITECTURES
from test_sliding_window import reference_sliding_window, tiny_unet

from monai_segcam import Box, SlidingWindowSegCAM, layer_presets
from monai_segcam.cam.sliding_window import _WindowPass

ROI = (16, 16, 12)


def unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).double().eval()


class CountingForward(torch.nn.Module):
    """Counts the windows that go through the network."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.windows = net, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("method", ["hirescam", "layercam", "gradcam", "xgradcam", "gradcampp", "eigencam"])
@pytest.mark.parametrize("budget", [1 << 30, 0, 200_000])
def test_one_pass_equals_two_passes(method, mode, budget):
    """pred=None (prediction and CAM from one pass, windows kept within the budget, partly or not at all) gives the
    same maps as passing the stitched prediction (the two-pass path), for several classes."""
    net = unet()
    x = torch.randn(2, 1, 28, 24, 20, dtype=torch.float64)
    kwargs = {"layers": ["bottleneck", "pre_head"], "method": method, "overlap": 0.5, "mode": mode}
    one = SlidingWindowSegCAM(net, ROI, activation_budget=budget, **kwargs)
    result = one(x, classes=[0, 1, 2])
    pred = sliding_window_inference(x, ROI, 1, net, 0.5, mode)
    torch.testing.assert_close(result.prediction, pred)
    two = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[0, 1, 2], pred=pred)
    for key in two:
        scale = float(two[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(result[key], two[key], rtol=1e-7, atol=1e-9 * scale)


@pytest.mark.parametrize("method,forwards", [("hirescam", 1), ("gradcam", 1), ("eigencam", 1)])
def test_each_window_runs_forward_once_when_it_fits_the_budget(method, forwards):
    net = CountingForward(unet())
    x = torch.randn(1, 1, 28, 24, 20, dtype=torch.float64)
    cam = SlidingWindowSegCAM(net, ROI, layers=["net.model.1"], method=method, overlap=0.5)
    cam(x, classes=[1, 2])
    num_windows = len(cam.grid(x.shape[2:]).slices)
    assert net.windows == forwards * num_windows


def test_recompute_path_when_nothing_fits():
    """With a zero budget nothing is kept: after the prediction pass, the windows touching the region run again for
    the backward pass."""
    net = CountingForward(unet())
    x = torch.randn(1, 1, 28, 24, 20, dtype=torch.float64)
    cam = SlidingWindowSegCAM(net, ROI, layers="net.model.1", method="hirescam", overlap=0.5, activation_budget=0)
    region = cam(x, classes=[1, 2]).region
    slices = cam.grid(x.shape[2:]).slices
    touching = sum(bool(region[(..., *w)].any()) for w in slices)
    assert touching > 0 and net.windows == len(slices) + touching


REGIONS = {
    "fp": ("fp", "logits", False, (28, 24, 20)),
    "fn-probabilities": ("fn", "probabilities", False, (28, 24, 20)),
    "pred-multi-label-probabilities": ("pred", "probabilities", True, (28, 24, 20)),
    "pred-padded": ("pred", "logits", False, (28, 24, 10)),
    "box-probabilities": (Box((2, 3, 1), (20, 14, 9)), "probabilities", False, (28, 24, 20)),
}


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
@pytest.mark.parametrize("case", list(REGIONS))
def test_streamed_regions_equal_two_passes(case, method):
    """The one-pass stream sets each window's region as soon as the stitched prediction over it is final: the same
    maps and regions as the two-pass path for regions from the prediction and a label, the probabilities target,
    sigmoid outputs, an image smaller than the window (padded) and a region that needs only the logits."""
    region, target, multi_label, shape = REGIONS[case]
    net = unet()
    x = torch.randn(2, 1, *shape, dtype=torch.float64)
    label = torch.randint(0, 3, (2, 1, *shape), generator=torch.Generator().manual_seed(2))
    kwargs = {"layers": ["bottleneck", "pre_head"], "method": method, "overlap": 0.5, "target": target,
              "multi_label": multi_label}  # fmt: skip
    result = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[1, 2], region=region, label=label)
    pred = sliding_window_inference(x, ROI, 1, net, 0.5)
    torch.testing.assert_close(result.prediction, pred)
    two = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[1, 2], region=region, label=label, pred=pred)
    torch.testing.assert_close(result.region, two.region)
    assert result.region.any()
    for key in two:
        scale = float(two[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(result[key], two[key], rtol=1e-7, atol=1e-9 * scale)


def test_completion_schedule_is_the_last_overlapping_group():
    """A window's stitched prediction is final after the last group holding a window that overlaps it, not before."""
    cam = SlidingWindowSegCAM(unet(), ROI, overlap=0.5, sw_batch_size=2)
    x = torch.randn(2, 1, 28, 24, 20, dtype=torch.float64)
    windows = _WindowPass(cam, x, cam.grid(x.shape[2:]), torch.device("cpu"), torch.device("cpu"))
    group_of = {k: g for g, group in enumerate(windows.all_groups) for k in group}

    def overlap(j, k):
        (b, u), (c, v) = windows.windows[j], windows.windows[k]
        return b == c and all(s.start < t.stop and t.start < s.stop for s, t in zip(u, v))

    completed = {group: g for g, groups in enumerate(windows.completion_schedule()) for group in groups}
    assert sorted(completed) == sorted(tuple(group) for group in windows.all_groups)
    for group, g in completed.items():
        assert g == max(group_of[j] for k in group for j in range(len(windows.windows)) if overlap(j, k))
    assert max(len(groups) for groups in windows.completion_schedule()) < len(windows.all_groups)


def test_stream_keeps_only_the_windows_waiting_for_their_neighbours(monkeypatch):
    """Each window's graph is forgotten after its backward: a budget for the windows pending at once (less than
    every window) still runs each window forward once, and the budget in use never exceeds it."""
    net = CountingForward(unet())
    x = torch.randn(1, 1, 40, 40, 30, dtype=torch.float64)  # 3x3x3 windows, the corners apart
    costs, in_use = [], []
    keep = _WindowPass.keep

    def recording_keep(self, group, logits, run, graph_bytes):
        keep(self, group, logits, run, graph_bytes)
        costs.append(self.cache[group].acts_bytes + self.cache[group].graph_bytes if group in self.cache else None)
        in_use.append(self.cam.activation_budget - self.budget_left)

    monkeypatch.setattr(_WindowPass, "keep", recording_keep)
    SlidingWindowSegCAM(net, ROI, layers="net.model.1", overlap=0.25)(x, classes=[1, 2])
    num_windows, cost, peak = len(costs), max(costs), max(in_use)
    assert net.windows == num_windows and peak < num_windows * cost * 0.8
    net.windows, costs[:], in_use[:] = 0, [], []
    budget = peak + cost // 2  # room for the pending windows, not for all of them
    SlidingWindowSegCAM(net, ROI, layers="net.model.1", overlap=0.25, activation_budget=budget)(x, classes=[1, 2])
    assert net.windows == num_windows and max(in_use) <= budget


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_stream_on_monai_architectures(name):
    """The one-pass stream on MONAI's segmentation networks (residual units, instance norms in place, transposed and
    trilinear upsampling, Swin attention): the same prediction as MONAI's inferer and the same maps as the two-pass
    path, at the bottleneck, the layer before the head and an encoder stage."""
    torch.manual_seed(0)
    net = ARCHITECTURES[name]().eval()
    roi, shape = ((64, 64, 64), (96, 64, 64)) if name == "SwinUNETR" else ((32, 32, 32), (48, 40, 32))
    x = torch.randn(1, 1, *shape)
    kwargs = {"layers": ["bottleneck", "pre_head", "encoder.0"], "method": "hirescam", "overlap": 0.25}
    result = SlidingWindowSegCAM(net, roi, **kwargs)(x, classes=[1, 2])
    pred = sliding_window_inference(x, roi, 1, net, 0.25)
    torch.testing.assert_close(result.prediction, pred, rtol=1e-5, atol=1e-5)
    two = SlidingWindowSegCAM(net, roi, **kwargs)(x, classes=[1, 2], pred=pred)
    torch.testing.assert_close(result.region, two.region)
    for key in two:
        scale = float(two[key].abs().max())
        assert scale > 0, key
        torch.testing.assert_close(result[key], two[key], rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_stream_with_window_batches_flips_and_an_ensemble(method):
    """Groups of 3 windows (the stream completes whole groups), two networks and mirror flips: the same as the
    two-pass path with the ensemble's stitched prediction given."""
    torch.manual_seed(3)
    nets = [unet(), UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).double().eval()]
    x = torch.randn(1, 1, 40, 40, 30, dtype=torch.float64)
    kwargs = {"layers": ["bottleneck", "pre_head"], "method": method, "overlap": 0.25, "sw_batch_size": 3,
              "flips": [(), (0,), (1, 2)], "mode": "gaussian"}  # fmt: skip
    one = SlidingWindowSegCAM(nets, ROI, **kwargs)
    result = one(x, classes=[1, 2])
    two = SlidingWindowSegCAM(nets, ROI, **kwargs)(x, classes=[1, 2], pred=one.predict(x))
    torch.testing.assert_close(result.region, two.region)
    for key in two:
        scale = float(two[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(result[key], two[key], rtol=1e-7, atol=1e-9 * scale)


def test_stream_with_a_given_label_map_and_probabilities():
    """A given label map defines the region while the probabilities target needs the stitched logits: the stream
    computes them and gives the same maps as passing the logits themselves."""
    net = unet()
    x = torch.randn(1, 1, 28, 24, 20, dtype=torch.float64)
    logits = sliding_window_inference(x, ROI, 1, net, 0.5)
    kwargs = {"layers": ["bottleneck", "pre_head"], "overlap": 0.5, "target": "probabilities"}
    from_labels = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[1, 2], pred=logits.argmax(1, keepdim=True))
    from_logits = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=[1, 2], pred=logits)
    torch.testing.assert_close(from_labels.region, from_logits.region)
    for key in from_logits:
        scale = float(from_logits[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(from_labels[key], from_logits[key], rtol=1e-7, atol=1e-9 * scale)


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_stream_equals_autograd_through_monai_stitching(method, mode):
    """The one-pass CAM of the voxels MONAI's stitched prediction assigns to class 2 equals autograd through MONAI's
    own sliding_window_inference with that region (an image smaller than the window in one dimension, windows in
    groups of 3)."""
    net = tiny_unet()
    x = torch.randn(1, 1, 37, 29, 13)
    roi = (16, 16, 16)
    mask = sliding_window_inference(x, roi, 1, net, 0.25, mode).argmax(1, keepdim=True).eq(2).float()
    assert mask.any()
    layer = layer_presets(net)["pre_head" if method == "hirescam" else "bottleneck"]
    expected = reference_sliding_window(net, layer, x, roi, 0.25, mode, 2, mask, method).relu()
    cam = SlidingWindowSegCAM(net, roi, layers=layer, method=method, overlap=0.25, mode=mode, sw_batch_size=3)
    got = cam(x, classes=2).map
    assert expected.abs().max() > 0
    torch.testing.assert_close(got.as_tensor(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
