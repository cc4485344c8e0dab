# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``load_bundle`` on the demo bundle, ``load_network`` from a dotted path, and ``load_checkpoint`` on real checkpoint
files (prefixes, wrong ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet

from monai_segcam.utils import LoadedModel, first_conv_in_channels, load_bundle, load_checkpoint, load_network

DEMO = Path(__file__).resolve().parents[2] / "bundles" / "segcam_demo"


def _net(channels=(4, 8)):
    return UNet(3, 2, 3, channels=channels, strides=(2,), num_res_units=0)


def test_load_bundle_demo():
    model = load_bundle(DEMO)
    assert isinstance(model, LoadedModel)
    assert model.in_channels == 1 == first_conv_in_channels(model.network)
    assert model.class_names == {0: "background", 1: "large organ", 2: "small organ"}
    assert isinstance(model.inferer, SlidingWindowInferer) and model.multi_label is False
    assert all("image" in t.keys for t in model.preprocessing.transforms)  # only the image's transforms
    assert model.description["bundle_version"] == "0.1.0"
    load_checkpoint(model.network, DEMO / "models" / "model.pt")  # the shipped weights fit the built network
    state = torch.load(DEMO / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(model.network.state_dict()[k], v) for k, v in state.items())


def test_load_network_and_its_errors():
    args = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2]}
    model = load_network("monai.networks.nets.UNet", args)
    assert isinstance(model.network, UNet) and model.in_channels == 2 and model.preprocessing is None
    assert model.description == {"network": "monai.networks.nets.UNet", "network_args": args}
    with pytest.raises(ValueError, match=re.escape("cannot import network 'monai.networks.nets.UNot'")):
        load_network("monai.networks.nets.UNot", args)
    with pytest.raises(ValueError, match=re.escape("cannot build monai.networks.nets.UNet with the arguments")):
        load_network("monai.networks.nets.UNet", {"spatial_dims": 3})
    with pytest.raises(ValueError, match=re.escape("built a dict, not a torch.nn.Module")):
        load_network("builtins.dict", {"a": 1})


def test_load_bundle_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle folder not found"):
        load_bundle(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="bundle config not found"):
        load_bundle(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text('{"inferer": "$None"}')
    with pytest.raises(ValueError, match="has no 'network_def'"):
        load_bundle(tmp_path)


def test_load_checkpoint_prefixes_and_mismatch(tmp_path):
    source, target = _net(), _net()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}  # DDP, under a key
    torch.save(wrapped, tmp_path / "ddp.pt")
    load_checkpoint(target, tmp_path / "ddp.pt")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    torch.save(_net((4, 16)).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"does not match the network UNet: shape mismatch \(checkpoint vs network\)"):
        load_checkpoint(target, tmp_path / "wrong.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_checkpoint(target, tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(target, tmp_path / "absent.pt")
