# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Every class at once: the batched and per-voxel-linear-head gradients equal one backward per class (float64), for
every gradient rule, both blendings, streamed and two-pass, flips and ensembles, and heads that are not linear."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet, SegResNet, UNet
from torch import nn

from monai_segcam import SlidingWindowSegCAM
from monai_segcam.cam import Terms, method_names
from monai_segcam.cam.heads import LinearHead, class_chunks

GRADIENT_RULES = [m for m in method_names() if m not in ("eigencam", "scorecam")]
SHAPE = (1, 1, 40, 36, 32)


def basic_unet():
    torch.manual_seed(0)
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=4, features=(2, 2, 4, 4, 8, 2)).double().eval()


def segresnet():
    torch.manual_seed(0)
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=4, init_filters=8, norm=("group", {"num_groups": 4})).double().eval()


def unet():
    torch.manual_seed(0)
    return UNet(3, 1, 4, channels=(2, 4), strides=(2,)).double().eval()


class _NoBatching(torch.autograd.Function):
    """``2x`` with a backward that vmap cannot batch (a Python scalar read from the gradient)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return grad * (2 + 0 * float(grad.flatten()[0]))


class UnbatchableHead(nn.Module):
    """A UNet whose logits pass an operation without a batching rule: the batched backward falls back per class."""

    def __init__(self) -> None:
        super().__init__()
        self.body = unet()

    def forward(self, x):
        return _NoBatching.apply(self.body(x))


def both_paths(net, classes="all", region="pred", **kwargs):
    """The maps of one engine with batched classes and with one backward per class."""
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cam = SlidingWindowSegCAM(net, (32, 32, 32), overlap=0.5, sw_batch_size=2, **kwargs)
    batched = cam(x, classes=classes, region=region)
    cam.batch_classes = False
    per_class = cam(x, classes=classes, region=region)
    return batched, per_class


def assert_same_maps(batched, per_class):
    assert batched.classes == per_class.classes
    for key in per_class:
        expected = per_class[key].as_tensor()
        assert expected.abs().max() > 0
        torch.testing.assert_close(batched[key].as_tensor(), expected, rtol=1e-9, atol=1e-12 * float(expected.abs().max()))


def heads_of(net, layers="pre_head"):
    terms = Terms(net, None, layers, example_input_shape=(32, 32, 32))
    x = torch.randn(1, 1, 32, 32, 32, dtype=torch.float64)
    with torch.enable_grad(), terms.capture() as run:
        run(x)
        return list(run.heads)


def test_the_head_is_found_at_run_time():
    (basic,) = heads_of(basic_unet())
    assert isinstance(basic, LinearHead) and basic.copy_of == "pre_head"  # pre_head feeds the 1x1x1 convolution
    (seg,) = heads_of(segresnet())
    assert isinstance(seg, LinearHead) and seg.copy_of is None  # GroupNorm and ReLU between pre_head and the head
    assert heads_of(unet()) == [None]  # a strided transposed convolution ends the UNet
    assert heads_of(UnbatchableHead()) == [None]  # the logits are not a convolution's output


@pytest.mark.parametrize("method", GRADIENT_RULES)
def test_every_rule_and_blending_equals_one_backward_per_class(method):
    """Each rule with one blending and network, the two blendings and networks alternating over the rules."""
    net = basic_unet() if GRADIENT_RULES.index(method) % 2 else segresnet()
    mode = ("constant", "gaussian")[GRADIENT_RULES.index(method) // 2 % 2]
    seeded = {"seed": 0, "n_samples": 3} if method == "smoothgrad" else {}  # both paths draw the same noise
    assert_same_maps(*both_paths(net, layers=["pre_head", "bottleneck"], method=method, mode=mode, **seeded))


@pytest.mark.parametrize("region", ["pred", "component", "all"])
@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_streamed_and_two_pass(region, method):
    """``pred``: the one-pass stream; ``component``: the windows are kept until the prediction is known; ``all``:
    no prediction."""
    assert_same_maps(*both_paths(segresnet(), layers="pre_head", method=method, region=region))


@pytest.mark.parametrize("target", ["logits", "probabilities"])
def test_flips_and_ensembles(target):
    nets = [basic_unet(), basic_unet()]
    with torch.no_grad():
        for p in nets[1].parameters():
            p.mul_(0.9)
    flips = [(), (0,), (1, 2)]
    assert_same_maps(*both_paths(nets, layers=["pre_head", "bottleneck"], method="hirescam", flips=flips, target=target))
    assert_same_maps(*both_paths(segresnet(), layers="pre_head", method="xgradcam", flips=flips, target=target))


@pytest.mark.parametrize("net", [unet, UnbatchableHead], ids=["transposed-conv head", "no batching rule"])
def test_heads_that_are_not_linear_per_voxel(net):
    model = net()
    if isinstance(model, UnbatchableHead):  # the fallback is exercised: vmap cannot batch this backward
        x = torch.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"[Bb]atching rule"):
            torch.autograd.grad(_NoBatching.apply(x), x, torch.ones(2, 3), is_grads_batched=True)
    assert_same_maps(*both_paths(model, layers="pre_head", method="hirescam", target="probabilities"))


def test_classes_all_and_chunks():
    batched, per_class = both_paths(segresnet(), classes="all", layers="pre_head", method="hirescam")
    assert batched.classes == (0, 1, 2, 3) and batched.map.shape[1] == 4
    import monai_segcam.cam.heads as heads

    budget = heads.CLASS_CHUNK_BYTES
    heads.CLASS_CHUNK_BYTES = 1  # one class per chunk: the chunks' results are the batched ones
    try:
        chunked, _ = both_paths(segresnet(), classes="all", layers="pre_head", method="hirescam")
    finally:
        heads.CLASS_CHUNK_BYTES = budget
    assert_same_maps(chunked, per_class)
    assert class_chunks(5, 100, budget=250) == [range(2), range(2, 4), range(4, 5)]
    with pytest.raises(ValueError, match="stands alone"):
        both_paths(segresnet(), classes=["all", 1], layers="pre_head")


def test_smoothgrad_with_noise_equals_autograd_of_its_noisy_copies():
    """SmoothGrad with noise, both paths: the mean over the seeded noisy copies of dS/dx through MONAI's
    ``sliding_window_inference`` (the copies are those the rule draws, ``input_points(x).volume(item)``)."""
    from monai.inferers import sliding_window_inference

    net = basic_unet()
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cam = SlidingWindowSegCAM(net, (32, 32, 32), overlap=0.5, sw_batch_size=2, method="smoothgrad", n_samples=2,
                              seed=3, relu=False)  # fmt: skip
    points = cam.rule.input_points(x)
    expected = []
    for c in (1, 2):
        grad = torch.zeros_like(x)
        for item in range(points.count):
            noisy = points.volume(item).clone().requires_grad_()
            logits = sliding_window_inference(noisy, (32, 32, 32), 2, net, overlap=0.5)
            grad += torch.autograd.grad(logits[:, c].sum(), noisy)[0] / points.count
        expected.append(grad.sum(1))
    for batched in (True, False):
        cam.batch_classes = batched
        result = cam(x, classes=[1, 2], region="all")["input"].as_tensor()
        torch.testing.assert_close(result, torch.stack(expected, 1), rtol=1e-9, atol=1e-12)
