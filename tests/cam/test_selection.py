# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Networks with several outputs: deep supervision lists, dicts of heads; the full-resolution logits are picked."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet, SegResNetDS, UNet
from torch import nn

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.cam import select_logits

try:  # PyPI dynamic-network-architectures (nnU-Net's networks), installed with --no-deps (see setup.cfg)
    from dynamic_network_architectures.architectures import unet as dna_unet
except ImportError:  # pragma: no cover
    dna_unet = None
NNUNET = pytest.mark.skipif(dna_unet is None, reason="dynamic-network-architectures is not installed")


def plain_conv_unet(deep_supervision: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return dna_unet.PlainConvUNet(
        1, 3, (4, 8, 16), nn.Conv3d, 3, (1, 2, 2), n_conv_per_stage=1, num_classes=3, n_conv_per_stage_decoder=1,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=deep_supervision,
    ).eval()  # fmt: skip


@NNUNET
def test_deep_supervision_lists_give_the_full_resolution_output():
    x = torch.randn(1, 1, 16, 16, 16)
    net = SegResNetDS(3, init_filters=4, in_channels=1, out_channels=2, dsdepth=3).train()
    with torch.no_grad():
        outputs = net(x)  # training mode: one output per level, full resolution first
    assert isinstance(outputs, list) and len(outputs) == 3
    assert select_logits(outputs, spatial_shape=(16, 16, 16)) is outputs[0]
    assert select_logits(outputs) is outputs[0]  # grid unknown: the one largest
    with torch.no_grad():
        ds = plain_conv_unet()(x)
    assert [tuple(o.shape[2:]) for o in ds] == [(16, 16, 16), (8, 8, 8)]
    assert select_logits(tuple(ds), spatial_shape=x.shape[2:]) is ds[0]


def test_dicts_selectors_and_ambiguity():
    full, half = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)
    assert select_logits({"aux": half, "seg": full, "n": torch.tensor(3.0)}, spatial_shape=(8, 8, 8)) is full
    assert select_logits({"aux": half, "seg": full}, "aux") is half
    assert select_logits([half, full], 0) is half
    assert select_logits({"heads": [half, full]}, lambda out: out["heads"][0]) is half
    with pytest.raises(TypeError, match=r"returned a dict .*2 of them are on the input's grid \(8, 8, 8\): \['a'\] \(1, 3, 8, 8, 8\), \['b'\] \(1, 3, 8, 8, 8\); choose .*`output_selector=`"):
        select_logits({"a": full, "b": full.clone()}, spatial_shape=(8, 8, 8))
    with pytest.raises(TypeError, match=r"returned a list .*none is on the input's grid \(16, 16, 16\): \[0\] \(1, 3, 8, 8, 8\), \[1\] \(1, 3, 4, 4, 4\)"):
        select_logits([full, half], spatial_shape=(16, 16, 16))
    with pytest.raises(ValueError, match=r"output_selector='sg' does not exist .*options: \['seg'\] \(1, 3, 8, 8, 8\)"):
        select_logits({"seg": full}, "sg")
    with pytest.raises(TypeError, match=r"output_selector='heads' gave a list, not a tensor; options: \[0\] \(1, 3, 4, 4, 4\)"):
        select_logits({"heads": [half]}, "heads")


class TwoHeads(nn.Module):
    """A user's network with a dict output: full-resolution logits and a half-resolution auxiliary head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1)
        self.aux = nn.Conv3d(3, 2, 2, stride=2)

    def forward(self, x):
        seg = self.net(x)
        return {"aux": self.aux(seg), "seg": seg}


@NNUNET
@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_engines_pick_the_full_resolution_logits(engine):
    """nnU-Net's deep supervision list and a dict of heads: maps equal those with the explicit selector."""
    x = torch.randn(1, 1, 16, 16, 20)

    def make(net, **kwargs):
        if engine == "segcam":
            return SegCAM(net, method="hirescam", **kwargs)
        return SlidingWindowSegCAM(net, (16, 16, 16), method="hirescam", overlap=0.25, **kwargs)

    ds = plain_conv_unet()
    auto = make(ds, layers=["bottleneck", "pre_head"])(x, classes=[1, 2], region="all")
    explicit = make(ds, layers=["bottleneck", "pre_head"], output_selector=0)(x, classes=[1, 2], region="all")
    assert all(auto[k].abs().sum() > 0 for k in auto)
    torch.testing.assert_close({k: v.as_tensor() for k, v in auto.items()}, {k: v.as_tensor() for k, v in explicit.items()})
    heads = TwoHeads().eval()
    auto = make(heads, layers="pre_head")(x, classes=[1, 2], region="all").map
    explicit = make(heads, layers="pre_head", output_selector="seg")(x, classes=[1, 2], region="all").map
    assert auto.abs().sum() > 0
    torch.testing.assert_close(auto.as_tensor(), explicit.as_tensor())


def test_dynunet_deep_supervision_in_training_mode():
    """DynUNet with deep supervision returns a stacked tensor in training mode; the engines explain the network in
    eval mode (its single full-resolution output) and give it back in training mode."""
    net = DynUNet(3, 1, 3, [3, 3, 3], [1, 2, 2], [2, 2], filters=[4, 8, 16], deep_supervision=True, deep_supr_num=1)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert net.train()(x).shape == (1, 2, 3, 16, 16, 16)
    maps = SegCAM(net, layers=["bottleneck", "pre_head"])(x, classes=[1], region="all")
    assert net.training
    reference = SegCAM(net.eval(), layers=["bottleneck", "pre_head"])(x, classes=[1], region="all")
    for key in maps:
        torch.testing.assert_close(maps[key].as_tensor(), reference[key].as_tensor())
