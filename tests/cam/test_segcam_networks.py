# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAM on real MONAI networks against references computed independently in the tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet, DynUNet, SegResNet, SwinUNETR, UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM, layer_presets, list_layers, resolve_layers


def small_unet(out_channels: int = 3) -> UNet:
    return UNet(3, 1, out_channels, (8, 16, 32, 64), (2, 2, 2), num_res_units=2).eval()


def reference_cam(net, layer_name, x, cls, mask, method):
    """Textbook Seg-(HiRes-)Grad-CAM: full .backward() with a tensor hook, parameters trainable."""
    module = dict(net.named_modules())[layer_name]
    store = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = module.register_forward_hook(hook)
    try:
        logits = net(x)
        (logits[:, cls] * mask[:, 0]).sum().backward()
    finally:
        handle.remove()
        net.zero_grad(set_to_none=True)
    a, g = store["a"].detach(), store["a"].grad
    if method == "gradcam":
        raw = (g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1, keepdim=True)
    else:
        raw = (g * a).sum(1, keepdim=True)
    return F.interpolate(raw, size=x.shape[2:], mode="trilinear", align_corners=False).relu()


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_matches_full_backward_reference(method):
    net = small_unet()
    x = torch.randn(1, 1, 32, 40, 24)
    with torch.no_grad():
        logits = net(x)
    presets = layer_presets(net)
    maps = SegCAM(net, layers=["bottleneck", "pre_head"], method=method)(x, classes=[1, 2])
    for i, cls in enumerate([1, 2]):
        mask = (logits.argmax(1, keepdim=True) == cls).float()
        for key in ("bottleneck", "pre_head"):
            expected = reference_cam(net, presets[key], x, cls, mask, method)
            torch.testing.assert_close(maps[key][:, i : i + 1].as_tensor(), expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_region_score_gradient_finite_difference():
    """sum of the un-ReLU'd full-resolution HiRes map = <dS/dA, A> = d/dt S((1+t) A) at t=0 (float64)."""
    net = DynUNet(3, 1, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16])
    net = net.double().eval()
    x = torch.randn(1, 1, 16, 16, 16, dtype=torch.float64)
    layer = resolve_layers(net, "pre_head")[0]
    with torch.no_grad():
        logits = net(x)
    mask = (logits.argmax(1, keepdim=True) == 1).double()
    maps = SegCAM(net, layers="pre_head", method="hirescam", relu=False)(x, classes=1, region=mask).map

    def score(scale):
        handle = layer.module.register_forward_hook(lambda _m, _i, out: out * scale)
        try:
            with torch.no_grad():
                return (net(x)[:, 1:2] * mask).sum()
        finally:
            handle.remove()

    h = 1e-6
    fd = (score(1 + h) - score(1 - h)) / (2 * h)
    assert maps.shape[2:] == x.shape[2:]  # the pre-head layer is at full resolution: no upsampling
    torch.testing.assert_close(maps.sum(), fd, rtol=1e-6, atol=1e-9)


def test_empty_region_gives_exact_zeros_and_warning():
    net = small_unet()
    x = torch.randn(1, 1, 24, 24, 24)
    for method in ("gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "xrescam", "eigencam"):
        with pytest.warns(UserWarning, match="Empty region"):
            maps = SegCAM(net, layers=["bottleneck", "pre_head"], method=method)(x, classes=[1, 2], region="empty")
        for value in maps.values():
            assert torch.equal(value.as_tensor(), torch.zeros_like(value.as_tensor())), method


def test_batch_with_different_regions_equals_per_sample():
    net = small_unet()
    x = torch.randn(2, 1, 24, 24, 24)
    masks = torch.zeros(2, 1, 24, 24, 24)
    masks[0, :, 2:10, 4:12, 6:14] = 1
    masks[1, :, 12:20, 10:18, 3:9] = 1
    for method in ("gradcam", "hirescam"):
        cam = SegCAM(net, layers="bottleneck", method=method)
        both = cam(x, classes=[0, 2], region=masks).map
        for b in range(2):
            single = cam(x[b : b + 1], classes=[0, 2], region=masks[b : b + 1]).map
            scale = float(single.abs().max())
            assert scale > 0
            torch.testing.assert_close(both[b : b + 1].as_tensor(), single.as_tensor(), rtol=1e-4, atol=1e-5 * scale)
        assert not torch.allclose(both[0], both[1])


ARCHITECTURES = {
    "UNet": lambda: UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1),
    "BasicUNet": lambda: BasicUNet(3, 1, 3, features=(4, 4, 8, 8, 16, 4)),
    "DynUNet": lambda: DynUNet(3, 1, 3, [3, 3, 3, 3], [1, 2, 2, 2], [2, 2, 2], filters=[4, 8, 16, 32]),
    "SegResNet": lambda: SegResNet(3, init_filters=8, in_channels=1, out_channels=3),
    "SwinUNETR": lambda: SwinUNETR(in_channels=1, out_channels=3, feature_size=12),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_monai_architectures_bottleneck_and_pre_head(name):
    net = ARCHITECTURES[name]().eval()
    size = 64 if name == "SwinUNETR" else 32  # SwinUNETR's instance norms need > 1 voxel at 1/32 resolution
    x = MetaTensor(torch.randn(1, 1, size, size, size), affine=torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0])))
    maps = SegCAM(net, layers=["bottleneck", "pre_head", "encoder.0", "decoder.0"], method="hirescam")(x, classes=[1, 2], region="all")
    for key, value in maps.items():
        assert value.shape == (1, 2, size, size, size), key
        assert torch.isfinite(value).all() and value.abs().sum() > 0, key
        torch.testing.assert_close(value.affine, x.affine)
    table = list_layers(net, (1, 1, size, size, size))
    roles = {role for info in table for role in info.roles}
    assert {"bottleneck", "pre_head", "encoder.0", "decoder.0"} <= roles
    assert "bottleneck" in str(table)


def test_unet_presets_match_the_architecture():
    presets = layer_presets(UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2))
    assert presets["bottleneck"] == "model.1.submodule.1.submodule.1.submodule.1.submodule"
    assert presets["pre_head"] == "model.1"
    assert presets["encoder.0"] == "model.0"
    assert presets["encoder.3"] == "model.1.submodule.1.submodule.1.submodule.0"
    assert presets["decoder.0"] == "model.1.submodule.1.submodule.1.submodule.2"
    assert presets["decoder.2"] == "model.1.submodule.2"


def test_no_parameter_gradients_hooks_or_state_left_behind():
    net = small_unet().train()
    flags = [i % 3 != 0 for i, _ in enumerate(net.parameters())]
    for p, flag in zip(net.parameters(), flags):
        p.requires_grad_(flag)
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():  # like a MONAI evaluator
        maps = SegCAM(net, layers=["bottleneck", "pre_head"], method="gradcam")(x, classes=[0, 1, 2], region="all")
    assert all(v.abs().sum() > 0 for v in maps.values())
    assert all(v.grad_fn is None and not v.requires_grad for v in maps.values())
    assert net.training
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="out of range"):
        SegCAM(net, layers="bottleneck")(x, classes=7).map
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert all(not m._forward_hooks for m in net.modules())


def test_all_classes_from_one_forward_pass():
    """One forward pass per call for all classes; the roles are discovered once per network (one probe pass when
    the first engine is built), so building another engine runs no forward pass."""
    net = small_unet()
    cam = SegCAM(net, layers=["bottleneck", "pre_head"], method="hirescam")
    calls = []
    handle = net.register_forward_pre_hook(lambda *_: calls.append(1))
    cam(torch.randn(1, 1, 24, 24, 24), classes=[0, 1, 2], region="all")
    assert len(calls) == 1
    SegCAM(net, layers=["bottleneck", "pre_head", "encoder.0"], method="gradcam")
    handle.remove()
    assert len(calls) == 1


def test_in_place_activation_after_the_hooked_layer():
    """DynUNet's blocks end with norm -> in-place LeakyReLU; the captured norm output must stay pre-activation."""
    net = DynUNet(3, 1, 3, [3, 3, 3], [1, 2, 2], [2, 2], filters=[4, 8, 16]).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    layer = "downsamples.0.norm2"
    maps = SegCAM(net, layers=layer, method="hirescam", relu=False)(x, classes=1, region="all").map
    for module in net.modules():  # reference: no in-place ops anywhere
        if hasattr(module, "inplace"):
            module.inplace = False
    store = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda _m, _i, out: store.setdefault("a", out))
    logits = net(x)
    handle.remove()
    (g,) = torch.autograd.grad(logits[:, 1].sum(), store["a"])
    raw = (g * store["a"]).sum(1, keepdim=True).detach()
    expected = F.interpolate(raw, size=x.shape[2:], mode="trilinear", align_corners=False)
    torch.testing.assert_close(maps.as_tensor(), expected, rtol=1e-4, atol=1e-6)


def test_image_without_batch_dimension_is_refused_clearly():
    net = small_unet()
    for engine in (SegCAM(net), SlidingWindowSegCAM(net, roi_size=16)):
        with pytest.raises(ValueError, match=r"batch-first \(B, C\) \+ 3 spatial dims"):
            engine(torch.randn(1, 16, 16, 16))
