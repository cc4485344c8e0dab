# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The prediction and the CAM from one forward pass: the same maps as the two-pass path and as autograd."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SlidingWindowSegCAM

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
