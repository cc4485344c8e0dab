# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""ActivationCapture (cam/capture.py), the one place touching a user's network: hooks always removed, train/eval state
and requires_grad flags restored (also when something raises), captures unchanged by in-place operations after the
hooked module, shared modules and bad selectors refused."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from monai_segcam.cam import ActivationCapture, resolve_layers


def small_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, (4, 8), (2,), num_res_units=1)


def hooks_left(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


def test_state_is_changed_inside_and_restored_after_also_on_exception():
    net = small_unet().train()
    net.model[0].eval()  # mixed train/eval state
    flags = [i % 2 == 0 for i, _ in enumerate(net.parameters())]
    for p, flag in zip(net.parameters(), flags):
        p.requires_grad_(flag)
    training = [m.training for m in net.modules()]
    layers = resolve_layers(net, ["model.0", "model.1"])
    for fail in (False, True):
        raises = pytest.raises(RuntimeError, match="boom") if fail else torch.enable_grad()
        with raises, ActivationCapture(net, layers) as capture:
            assert not any(m.training for m in net.modules())
            assert not any(p.requires_grad for p in net.parameters())
            assert all(layer.module._forward_hooks for layer in layers)
            net(torch.randn(1, 1, 8, 8, 8))
            assert set(capture.activations) == {"model.0", "model.1"}
            if fail:
                raise RuntimeError("boom")
        assert hooks_left(net) == 0 and capture.activations == {}
        assert [m.training for m in net.modules()] == training
        assert [p.requires_grad for p in net.parameters()] == flags
        assert all(p.grad is None for p in net.parameters())


def test_in_place_operation_after_the_hooked_module_does_not_alter_the_capture():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv3d(2, 2, 1))
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        expected = net[0](x)  # with negative values the in-place ReLU would zero
    assert (expected < 0).any()
    with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "0")) as capture:
        logits = net(x)
        acts = capture.activations["0"]
        torch.testing.assert_close(acts.detach(), expected)
        (grads,) = torch.autograd.grad(logits[:, 1].sum(), acts)
    # d logits_1 / dA = ReLU'(A) * W2[1]: zero where A < 0, the head's weight elsewhere
    w = net[2].weight[1, :, 0, 0, 0].detach()
    torch.testing.assert_close(grads, (expected > 0) * w.view(1, 2, 1, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x))  # the network's own output is unchanged by the capture


def test_non_differentiable_capture_is_detached_and_leaves_the_output_alone():
    net = small_unet().eval()
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        reference = net(x)
    with ActivationCapture(net, resolve_layers(net, "model.1"), differentiable=False) as capture:
        out = net(x)
        assert not capture.activations["model.1"].requires_grad
        capture.reset()
        assert capture.activations == {}
    torch.testing.assert_close(out.detach(), reference)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv3d(1, 1, 1)

    def forward(self, x):
        return self.block(self.block(x))


def test_shared_module_raises_and_hooks_are_removed():
    net = Shared()
    raises = pytest.raises(RuntimeError, match="ran more than once in one forward pass")
    with raises, ActivationCapture(net, resolve_layers(net, "block")):
        net(torch.randn(1, 1, 4, 4, 4))
    assert hooks_left(net) == 0 and all(p.requires_grad for p in net.parameters())


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage = nn.Conv3d(1, 2, 1)

    def forward(self, x):
        y = self.stage(x)
        return y, y * 3


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()

    def forward(self, x):
        a, b = self.pair(x)
        return a + b


def test_selectors_capture_one_element_and_bad_ones_are_explained():
    net = TupleNet()
    x = torch.randn(1, 1, 4, 4, 4)
    with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "pair[1]")) as capture:
        out = net(x)
        torch.testing.assert_close(capture.activations["pair[1]"].detach(), 3 * net.pair.stage(x).detach())
        (grads,) = torch.autograd.grad(out.sum(), capture.activations["pair[1]"])
        torch.testing.assert_close(grads, torch.ones_like(grads))  # out = a + b: d out / d b = 1
    with pytest.raises(ValueError, match=r"Selector \[5\].*valid selectors: 0\.\.1"), ActivationCapture(
        net, resolve_layers(net, "pair[5]")
    ):
        net(x)
    with pytest.raises(TypeError, match="not a tensor"), ActivationCapture(net, resolve_layers(net, "pair")):
        net(x)
    with pytest.raises(TypeError, match="takes no selector"), ActivationCapture(net, resolve_layers(net, "pair.stage[0]")):
        net(x)
    assert hooks_left(net) == 0
