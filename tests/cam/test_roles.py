# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Layer roles discovered from a traced forward pass, on every 3D segmentation network of MONAI and on nnU-Net's.

Each role is checked against the network's own forward pass, watched by independent hooks: the resolution
relations (encoders going down, the bottleneck the coarsest, decoders coming back up, pre_head the input of the
module producing the logits) and the order in which the stages run, not only that a CAM comes out.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from monai.networks.nets import (
    UNETR,
    AttentionUnet,
    BasicUNet,
    DiNTS,
    DynUNet,
    FlexibleUNet,
    SegResNet,
    SegResNetDS,
    SwinUNETR,
    UNet,
    VNet,
)
from monai.networks.nets.dints import TopologyInstance
from torch import nn

from monai_segcam import SegCAM, SlidingWindowSegCAM, layer_presets, list_layers
from monai_segcam.cam import LayerDiscoveryError, discover_roles

try:  # PyPI dynamic-network-architectures (nnU-Net's networks), installed with --no-deps (see setup.cfg)
    from dynamic_network_architectures.architectures import unet as dna_unet
except ImportError:  # pragma: no cover - only nnU-Net's cases are skipped
    dna_unet = None
NNUNET = pytest.mark.skipif(dna_unet is None, reason="dynamic-network-architectures is not installed")


def _dints() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = TopologyInstance(channel_mul=0.25, num_blocks=3, num_depths=3, use_downsample=True)
        return DiNTS(dints_space=space, in_channels=1, num_classes=3, use_downsample=True)


def _nnunet(cls, deep_supervision: bool) -> nn.Module:
    extra = {"n_blocks_per_stage": (1, 1, 1, 1)} if cls is dna_unet.ResidualEncoderUNet else {"n_conv_per_stage": 1}
    return cls(
        1, 4, (4, 8, 16, 16), nn.Conv3d, 3, (1, 2, 2, 2), num_classes=3, n_conv_per_stage_decoder=1,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision, **extra,
    )  # fmt: skip


# name -> (network factory, probe/volume edge length); small channel counts, the smallest size each accepts
NETWORKS = {
    "UNet": (lambda: UNet(3, 1, 3, (4, 8, 16, 32, 64), (2, 2, 2, 2), num_res_units=2), 32),
    "BasicUNet": (lambda: BasicUNet(3, 1, 3, features=(4, 4, 8, 8, 16, 4)), 32),
    "DynUNet": (lambda: DynUNet(3, 1, 3, [3, 3, 3, 3], [1, 2, 2, 2], [2, 2, 2], filters=[4, 8, 16, 32]), 32),
    "SegResNet": (lambda: SegResNet(3, init_filters=8, in_channels=1, out_channels=3), 32),
    "SegResNetDS": (lambda: SegResNetDS(3, init_filters=4, in_channels=1, out_channels=3, dsdepth=2), 32),
    "SwinUNETR": (lambda: SwinUNETR(in_channels=1, out_channels=3, feature_size=12, depths=(1, 1, 1, 1)), 64),
    "UNETR": (lambda: UNETR(1, 3, 32, feature_size=4, hidden_size=48, mlp_dim=96, num_heads=2), 32),
    "VNet": (lambda: VNet(3, 1, 3), 32),
    "AttentionUnet": (lambda: AttentionUnet(3, 1, 3, (4, 8, 16, 32), (2, 2, 2)), 32),
    "FlexibleUNet": (
        lambda: FlexibleUNet(1, 3, "efficientnet-b0", pretrained=False, decoder_channels=(16, 8, 8, 4, 4), spatial_dims=3),
        64,
    ),
    "DiNTS": (_dints, 32),
    "PlainConvUNet": (lambda: _nnunet(dna_unet.PlainConvUNet, deep_supervision=True), 32),
    "ResidualEncoderUNet": (lambda: _nnunet(dna_unet.ResidualEncoderUNet, deep_supervision=False), 32),
}
NAMES = [pytest.param(n, marks=NNUNET) if n in ("PlainConvUNet", "ResidualEncoderUNet") else n for n in NETWORKS]

# the hand-written presets the package had for five MONAI networks, for the configurations above
OLD_PRESETS = {
    "UNet": {
        "encoder.0": "model.0",
        "encoder.1": "model.1.submodule.0",
        "encoder.2": "model.1.submodule.1.submodule.0",
        "encoder.3": "model.1.submodule.1.submodule.1.submodule.0",
        "bottleneck": "model.1.submodule.1.submodule.1.submodule.1.submodule",
        "decoder.0": "model.1.submodule.1.submodule.1.submodule.2",
        "decoder.1": "model.1.submodule.1.submodule.2",
        "decoder.2": "model.1.submodule.2",
        "pre_head": "model.1",
    },
    "BasicUNet": {
        **{f"encoder.{i}": name for i, name in enumerate(["conv_0", "down_1", "down_2", "down_3"])},
        "bottleneck": "down_4",
        **{f"decoder.{i}": name for i, name in enumerate(["upcat_4", "upcat_3", "upcat_2", "upcat_1"])},
        "pre_head": "upcat_1",
    },
    "DynUNet": {
        **{f"encoder.{i}": name for i, name in enumerate(["input_block", "downsamples.0", "downsamples.1"])},
        "bottleneck": "bottleneck",
        **{f"decoder.{i}": f"upsamples.{i}" for i in range(3)},
        "pre_head": "upsamples.2",
    },
    "SegResNet": {
        **{f"encoder.{i}": f"down_layers.{i}" for i in range(3)},
        "bottleneck": "down_layers.3",
        **{f"decoder.{i}": f"up_layers.{i}" for i in range(3)},
        "pre_head": "up_layers.2",
    },
    "SwinUNETR": {
        **{f"encoder.{i}": f"encoder{i + 1}" for i in range(4)},
        "bottleneck": "encoder10",
        **{f"decoder.{i}": f"decoder{5 - i}" for i in range(5)},
        "pre_head": "decoder1",
    },
}

# what the rule gives for the other networks (documented in docs/layers.md)
EXPECTED = {
    "SegResNetDS": {"bottleneck": "encoder.layers.3.blocks", "pre_head": "up_layers.2.blocks"},
    "UNETR": {"encoder.0": "encoder1", "encoder.3": "encoder4", "bottleneck": "decoder5", "pre_head": "decoder2"},
    "VNet": {"encoder.0": "in_tr", "bottleneck": "down_tr256", "decoder.0": "up_tr256", "pre_head": "up_tr32"},
    "AttentionUnet": {
        "bottleneck": "model.1.submodule.1.submodule.1.submodule",
        "decoder.0": "model.1.submodule.1.submodule.1.merge",
        "pre_head": "model.1.merge",
    },
    "FlexibleUNet": {"bottleneck": "encoder._blocks.6", "pre_head": "decoder.blocks.4"},
    "DiNTS": {"decoder.0": "stem_up.2.mod", "pre_head": "stem_up.0.mod"},
    "PlainConvUNet": {"encoder.0": "encoder.stages.0", "bottleneck": "encoder.stages.3", "pre_head": "decoder.stages.2"},
    "ResidualEncoderUNet": {"encoder.0": "encoder.stages.0", "bottleneck": "encoder.stages.3", "pre_head": "decoder.stages.2"},
}

_BUILT: dict[str, nn.Module] = {}


def build(name: str) -> nn.Module:
    """One network per name for the whole module (the roles are cached per network object)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = NETWORKS[name][0]().eval()
    return _BUILT[name]


def watch(net: nn.Module, x: torch.Tensor) -> tuple[dict[str, list], object]:
    """Independent of the package: every module's calls (order, first tensor input, output) in one forward pass."""
    calls: dict[str, list] = {}
    order = [0]

    def hook(name):
        def record(_module, args, output):
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            calls.setdefault(name, []).append((order[0], first, output))
            order[0] += 1

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules() if n]
    try:
        with torch.no_grad():
            output = net(x)
    finally:
        for h in handles:
            h.remove()
    return calls, output


def voxels(t: torch.Tensor) -> int:
    return math.prod(t.shape[2:])


@pytest.mark.parametrize("name", NAMES)
def test_roles_follow_the_resolution_of_the_forward_pass(name):
    net, size = build(name), NETWORKS[name][1]
    roles = discover_roles(net, (1, 1, size, size, size)).roles
    x = torch.randn(1, 1, size, size, size)
    calls, output = watch(net, x)
    logits = output[0] if isinstance(output, (list, tuple)) else output  # nnU-Net's deep supervision: full res first
    assert logits.shape[2:] == x.shape[2:]
    for role, module in roles.items():
        assert module in calls and len(calls[module]) == 1, f"{role} -> {module} must run exactly once"
    when = {role: calls[m][0][0] for role, m in roles.items()}
    out = {role: calls[m][0][2] for role, m in roles.items()}
    encoders = [out[r] for r in sorted((r for r in roles if r.startswith("encoder.")), key=lambda r: int(r[8:]))]
    decoders = [out[r] for r in sorted((r for r in roles if r.startswith("decoder.")), key=lambda r: int(r[8:]))]
    assert encoders and decoders
    bottleneck, pre_head = out["bottleneck"], out["pre_head"]
    # the encoder goes down, the bottleneck is the coarsest, the decoder comes back up
    assert [voxels(e) for e in encoders] == sorted((voxels(e) for e in encoders), reverse=True)
    assert [voxels(d) for d in decoders] == sorted(voxels(d) for d in decoders)
    assert all(voxels(bottleneck) <= voxels(t) for t in encoders + decoders + [pre_head])
    assert voxels(bottleneck) < voxels(x) and voxels(decoders[0]) > voxels(bottleneck)
    # ...in this order in the forward pass
    enc_times = [when[r] for r in roles if r.startswith("encoder.")]
    dec_times = [when[r] for r in roles if r.startswith("decoder.")]
    assert enc_times == sorted(enc_times) and dec_times == sorted(dec_times)
    assert max(enc_times) < when["bottleneck"] < min(dec_times) <= when["pre_head"]
    # pre_head is the finest decoder map and the input of the module producing the logits
    assert voxels(pre_head) == max(voxels(d) for d in decoders)
    heads = [n for n, c in calls.items() if c[-1][2] is logits and c[-1][1] is pre_head]
    assert heads, f"no module turns pre_head's output {tuple(pre_head.shape)} into the logits"
    if name != "UNet":  # MONAI's UNet upsamples in its last layer; the others' heads keep the resolution
        assert pre_head.shape[2:] == logits.shape[2:]
    expected = OLD_PRESETS.get(name) or EXPECTED[name]
    assert {role: roles[role] for role in expected} == expected


@pytest.mark.parametrize("name", sorted(OLD_PRESETS))
def test_discovery_reproduces_the_former_presets(name):
    """The five hand-written presets are exactly what the discovery finds (role for role, nothing more)."""
    assert layer_presets(build(name)) == OLD_PRESETS[name]


def test_discovery_reproduces_the_former_presets_of_a_one_level_unet():
    """The smallest UNet (one down step, no residual units: the command line tests' network) has no decoder stage;
    the former preset had none either."""
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0)
    assert layer_presets(net) == {"encoder.0": "model.0", "bottleneck": "model.1.submodule", "pre_head": "model.1"}


@pytest.mark.parametrize("name", NAMES)
def test_segcam_and_sliding_window_on_bottleneck_and_pre_head(name):
    net, size = build(name), NETWORKS[name][1]
    discover_roles(net, (size,) * 3)  # a fixed-size network (UNETR) is probed on its size; engines reuse the roles
    x = torch.randn(1, 1, size, size, size)
    layers = ["bottleneck", "pre_head"]
    whole = SegCAM(net, layers=layers, method="hirescam", relu=False)(x, classes=[1, 2], region="all")
    roi = (size,) * 3
    longer = torch.cat([x, x[..., : size // 2]], dim=-1)  # two windows along the last axis
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        windows = SlidingWindowSegCAM(net, roi, layers=layers, method="gradcam", relu=False, overlap=0.25)(
            longer, classes=[1], region="all"
        )  # raw maps (no ReLU): a Grad-CAM of random weights may be negative everywhere
    # Grad-CAM at SegResNet's pre_head is zero in exact arithmetic (a GroupNorm of one channel per group follows it,
    # docs/peers.md): its float32 round-off comes back as exact zeros, with the warning
    zero = {("SegResNet", "pre_head")}
    for maps, shape in ((whole, x.shape), (windows, longer.shape)):
        for key in ("bottleneck", "pre_head"):
            value = maps[key].as_tensor()
            assert value.shape[2:] == shape[2:] and torch.isfinite(value).all(), (name, key)
            if maps is windows and (name, key) in zero:
                assert value.abs().sum() == 0 and any("round-off" in str(w.message) for w in caught), (name, key)
            else:
                assert value.abs().sum() > 0, (name, key)
    assert not net.training and all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_discovery_leaves_no_trace_and_runs_once_per_network():
    net = UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).train()
    net.model[0].eval()
    flags = [m.training for m in net.modules()]
    grads = [i % 2 == 0 for i, _ in enumerate(net.parameters())]
    for p, flag in zip(net.parameters(), grads):
        p.requires_grad_(flag)
    calls = []
    handle = net.register_forward_pre_hook(lambda *_: calls.append(1))
    first = discover_roles(net)
    again = discover_roles(net)
    SegCAM(net, layers="bottleneck")
    handle.remove()
    assert calls == [1] and first is again
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == grads and all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert not torch.overrides._get_current_function_mode_stack()
    assert first.probe_shape == (1, 1, 64, 64, 64)


class SharedAndFunctional(nn.Module):
    """A user's network: one ReLU module shared by every layer, a skip merged by ``+`` outside any module."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv3d(1, 4, 3, padding=1)
        self.down = nn.Conv3d(4, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv3d(8, 8, 3, padding=1)
        self.up = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.act = nn.ReLU()
        self.head = nn.Conv3d(4, 3, 1)

    def forward(self, x):
        a = self.act(self.enc(x))
        b = self.act(self.mid(self.act(self.down(a))))
        return self.head(self.act(self.up(b)) + a)


def test_shared_module_and_functional_merge():
    """A module run several times never gets a role (its activation would be ambiguous); with the head's input
    made by ``+`` outside any module, pre_head is the last stage before the head."""
    roles = discover_roles(SharedAndFunctional(), (1, 1, 16, 16, 16)).roles
    assert roles == {"encoder.0": "enc", "encoder.1": "down", "bottleneck": "mid", "decoder.0": "up", "pre_head": "up"}


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        return self.head(self.body(x))


class Interpolated(nn.Module):
    """The logits are upsampled by ``F.interpolate`` after the last module: no module outputs them."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv3d(1, 4, 3, stride=2, padding=1)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        return nn.functional.interpolate(self.head(self.down(x)), scale_factor=2.0)


def test_ambiguous_or_impossible_discovery_says_why():
    flat = Flat()
    assert discover_roles(flat, (1, 1, 8, 8, 8)).roles == {"pre_head": "body"}
    with pytest.raises(ValueError, match=r"'bottleneck' does not exist in Flat: no stage before the head is coarser than the input"):
        SegCAM(flat, layers="bottleneck")
    with pytest.raises(ValueError, match=r"'encoder.4' does not exist in UNet: the discovered roles are \['encoder.0'"):
        SegCAM(build("UNet"), layers="encoder.4")
    with pytest.raises(LayerDiscoveryError, match=r"No module of Interpolated outputs the logits \(1, 2, 8, 8, 8\).*Stages: down"):
        discover_roles(Interpolated(), (1, 1, 8, 8, 8))
    table = list_layers(Interpolated(), (1, 1, 8, 8, 8))
    assert table.roles is None and "no roles: No module of Interpolated" in str(table)
    assert SegCAM(Interpolated(), layers="down").layers[0].module_name == "down"  # names need no discovery


class SizeFixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv3d(1, 2, 3, padding=1)
        self.head = nn.Conv3d(2, 2, 1)

    def forward(self, x):
        if x.shape[2:] != (20, 20, 20):
            raise ValueError(f"input must be 20^3, got {tuple(x.shape[2:])}")
        return self.head(self.body(x))


def test_probe_failures_are_listed_and_a_given_size_is_used():
    net = SizeFixed()
    with pytest.raises(LayerDiscoveryError, match=r"\(1, 1, 64, 64, 64\): ValueError: input must be 20\^3.*\(1, 1, 128, 128, 128\)"):
        layer_presets(net)
    roles = discover_roles(net, (20, 20, 20))  # a spatial size (a window): the channels come from the network
    assert roles.probe_shape == (1, 1, 20, 20, 20) and roles.head == "head" and roles.roles == {"pre_head": "body"}
    assert discover_roles(net) is roles and layer_presets(net) == {"pre_head": "body"}  # reused without a shape
