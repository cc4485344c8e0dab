# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Faults: an exception in the middle of a CAM call leaves no hook and restores the network; non-finite values are
refused with a clear error instead of producing NaN maps."""

from __future__ import annotations

import pytest
import torch
from helpers_reliability import assert_untouched, set_mixed_state, small_unet
from torch import nn

from monai_segcam import SegCAM, SlidingWindowSegCAM


class Flaky(nn.Module):
    """Wraps a network; its forward raises ``error`` on the ``fail_at``-th call (counting from 0)."""

    def __init__(self, net: nn.Module, fail_at: int, error: type[BaseException] = RuntimeError) -> None:
        super().__init__()
        self.net, self.fail_at, self.error, self.calls = net, fail_at, error, 0

    def forward(self, x):
        self.calls += 1
        if self.calls - 1 == self.fail_at:
            raise self.error("injected fault")
        return self.net(x)


def _engines(net):
    return {
        "segcam": lambda: SegCAM(net, layers=["net.model.0", "net.model.1"], method="hirescam"),
        "sw_local": lambda: SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.0, layers="net.model.1"),
        "sw_global": lambda: SlidingWindowSegCAM(
            net, roi_size=(8, 8, 4), overlap=0.0, layers="net.model.1", method="gradcam", activation_budget=0
        ),
        "sw_scorecam": lambda: SlidingWindowSegCAM(
            net, roi_size=(8, 8, 4), overlap=0.0, layers="net.model.0", method="scorecam", activation_budget=0,
            scorecam_batch_size=2,
        ),  # fmt: skip
    }


@pytest.mark.parametrize("engine", ["segcam", "sw_local", "sw_global", "sw_scorecam"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_fault_in_forward_leaves_no_trace(engine, error):
    """A forward that raises (also KeyboardInterrupt, a Ctrl-C in a long run) at every possible point of a call
    propagates, leaves no hook, restores train flags and requires_grad, and later calls give the same maps."""
    flaky = Flaky(small_unet(), fail_at=-1, error=error)
    image = torch.randn(1, 1, 8, 8, 8)
    cam = _engines(flaky)[engine]()
    before = set_mixed_state(flaky)
    expected = cam(image, classes=[1, 2])
    passes = flaky.calls
    assert passes >= 1
    for fail_at in range(passes):  # a fault in each forward pass the call makes (prediction, phase 1, phase 2)
        flaky.calls, flaky.fail_at = 0, fail_at
        with pytest.raises(error, match="injected fault"):
            cam(image, classes=[1, 2])
        assert_untouched(flaky, before)
    flaky.fail_at = -1
    torch.testing.assert_close(cam(image, classes=[1, 2]), expected)
    assert_untouched(flaky, before)


@pytest.mark.parametrize("engine", ["segcam", "sw_local"])
def test_error_after_forward_leaves_no_trace(engine):
    """A class index out of range is detected after the forward (from the output's channels): clear error, and the
    network is restored."""
    net = small_unet()
    cam = (SegCAM(net) if engine == "segcam" else SlidingWindowSegCAM(net, roi_size=(8, 8, 4)))
    before = set_mixed_state(net)
    with pytest.raises(ValueError, match=r"Class index \[3\] out of range: the network has 3 output channels"):
        cam(torch.randn(1, 1, 8, 8, 8), classes=[1, 3], region="all")
    assert_untouched(net, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_non_finite_input_is_refused(engine, bad):
    """NaN/Inf in the image: a ValueError saying so, before any forward pass."""
    net = small_unet()
    cam = SegCAM(net) if engine == "segcam" else SlidingWindowSegCAM(net, roi_size=(8, 8, 4))
    image = torch.randn(1, 1, 8, 8, 8)
    image[0, 0, 3, 4, 5] = bad
    with pytest.raises(ValueError, match="image contains NaN or Inf"):
        cam(image)


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_nan_weights_before_the_layer_name_the_layer(engine):
    """NaN weights upstream of the explained layer: FloatingPointError naming the layer whose activations are NaN;
    the network is restored."""
    net = small_unet()
    with torch.no_grad():
        next(net.model[0].parameters()).fill_(float("nan"))
    cam = SegCAM(net, layers="model.1") if engine == "segcam" else SlidingWindowSegCAM(net, (8, 8, 4), "model.1")
    before = set_mixed_state(net)
    with pytest.raises(FloatingPointError, match=r"Layer 'model.1' \(model.1\) produced NaN/Inf activations"):
        cam(torch.randn(1, 1, 8, 8, 8), region="all")
    assert_untouched(net, before)


@pytest.mark.parametrize("region", ["all", "pred"])
@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_nan_weights_after_the_layer_are_refused(engine, region):
    """NaN weights in the head (after the explained layer) make the logits NaN: a FloatingPointError naming the
    explained layer and pointing at the modules after it, never a NaN map nor a misleading 'empty region'."""
    net = small_unet()
    with torch.no_grad():
        net.model[2].conv.weight.fill_(float("nan"))
    cam = SegCAM(net, layers="model.1") if engine == "segcam" else SlidingWindowSegCAM(net, (8, 8, 4), "model.1")
    with pytest.raises(FloatingPointError, match=r"output contains NaN/Inf values .*'model.1'.* a module after them"):
        cam(torch.randn(1, 1, 8, 8, 8), region=region)


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_non_finite_region_mask_and_pred_are_refused(engine):
    """A soft region mask or a given prediction with NaN/Inf: ValueError, not a NaN map."""
    net = small_unet()
    cam = SegCAM(net) if engine == "segcam" else SlidingWindowSegCAM(net, roi_size=(8, 8, 4))
    image = torch.randn(1, 1, 8, 8, 8)
    mask = torch.rand(1, 1, 8, 8, 8)
    mask[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"region .* contains NaN or Inf"):
        cam(image, region=mask)
    pred = torch.randn(1, 3, 8, 8, 8)
    pred[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="pred contains NaN or Inf"):
        cam(image, pred=pred)
