# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The channels-last layout of CPU 3D convolutions during a capture: taken, invisible to the network, exact."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

from monai_segcam import SegCAM
from monai_segcam.cam.capture import ActivationCapture
from monai_segcam.cam.layers import resolve_layers


class LayoutProbe(nn.Conv3d):
    """A 3D convolution that records the memory layout of its input."""

    seen: list[bool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous())
        return super().forward(x)


class Flattening(nn.Module):
    """Views a convolution's output as (B, C * D * H * W), which only works on the default layout, and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1).view(x.shape)


def probe_network() -> nn.Sequential:
    torch.manual_seed(0)
    probe = LayoutProbe(4, 6, 3, padding=1)
    probe.seen = []
    body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.PReLU())
    head = nn.Sequential(probe, Flattening(), nn.InstanceNorm3d(6), nn.PReLU(), nn.Conv3d(6, 3, 3, padding=1))
    return nn.Sequential(body, head).eval()


def test_cpu_convolutions_read_channels_last_and_hand_back_the_default_layout():
    net = probe_network()
    probe = net[1][0]
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "0")):
        out = net(x)  # Flattening's view would raise on a channels-last output
    assert probe.seen == [True]
    assert out.is_contiguous()
    net(x)
    assert probe.seen == [True, False]  # outside the capture the network runs untouched
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())


def test_gradients_under_the_layout_equal_plain_autograd():
    net = probe_network()
    x = torch.randn(1, 1, 12, 12, 12)
    cotangent = torch.randn(1, 3, 12, 12, 12)
    activation = net[0](x).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(net[1](activation), activation, cotangent)
    with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "0")) as capture:
        logits = net(x)
        (got,) = torch.autograd.grad(logits, capture.activations["0"], cotangent)
    assert net[1][0].seen == [False, True]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_unet_cam_unchanged_by_the_layout():
    """A MONAI U-Net's pre_head HiResCAM equals ``A * dS/dA`` from autograd on the network run without capture."""
    torch.manual_seed(0)
    net = UNet(3, 1, 2, (4, 8, 16), (2, 2), num_res_units=1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    region = torch.zeros(1, 1, 16, 16, 16)
    region[..., 4:10, 4:10, 4:10] = 1
    kept = {}
    handle = net.model[1].register_forward_hook(lambda _m, _i, out: kept.update(a=out))
    logits = net(x)
    handle.remove()
    (grad,) = torch.autograd.grad((logits[:, 1:2] * region).sum(), kept["a"])
    raw = (kept["a"] * grad).sum(1, keepdim=True).detach()
    reference = torch.relu(torch.nn.functional.interpolate(raw, size=(16, 16, 16), mode="trilinear"))
    cam = SegCAM(net, layers="model.1", method="hirescam")(x, classes=1, region=region.bool()).map
    torch.testing.assert_close(cam.as_tensor(), reference, rtol=1e-4, atol=1e-6)
