# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Layer resolution (cam/layers.py): names, roles, selectors, wrapper prefixes, errors listing close candidates, and
the layer table of list_layers."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from monai_segcam import SegCAM
from monai_segcam.cam import LayerTable, layer_presets, list_layers, resolve_layers, unwrap_network


def small_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).eval()


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x * 2, {"double": x * 2, "half": x / 2}


class WithTupleStage(nn.Module):
    """A segmentation network one of whose stages returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, 4, 3, padding=1)
        self.stage = TwoOutputs()
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        out, extra = self.stage(self.stem(x))
        return self.head(out + extra["half"])


def test_names_roles_and_selectors_resolve_to_modules():
    net = small_unet()
    modules = dict(net.named_modules())
    presets = layer_presets(net, (1, 1, 16, 16, 16))
    resolved = resolve_layers(net, ["model.0", "bottleneck", "pre_head"], (1, 1, 16, 16, 16))
    assert [r.key for r in resolved] == ["model.0", "bottleneck", "pre_head"]
    assert [r.module_name for r in resolved][1:] == [presets["bottleneck"], presets["pre_head"]]
    assert all(r.module is modules[r.module_name] and r.selector is None for r in resolved)
    (one,) = resolve_layers(net, "model.0")
    assert one.module is net.model[0] and resolved[0] == one
    tuple_net = WithTupleStage()
    first, half, last = resolve_layers(tuple_net, ["stage[0]", "stage['half']", "stage[-1]"])
    assert (first.module, first.selector, half.selector, last.selector) == (tuple_net.stage, 0, "half", -1)
    assert first.key == "stage[0]" and first.module_name == "stage"


def test_wrappers_and_their_prefixes_are_accepted():
    net = small_unet()
    wrapped = nn.DataParallel(net)
    assert unwrap_network(wrapped) is net and unwrap_network(net) is net
    (layer,) = resolve_layers(wrapped, "module.model.1")
    assert layer.module is net.model[1] and layer.key == "module.model.1" and layer.module_name == "model.1"


def test_unknown_name_lists_close_candidates_and_roles():
    net = small_unet()
    with pytest.raises(ValueError, match=r"Unknown layer 'model\.1\.submodul'.*Closest names: \['model\.1\.submodule"):
        resolve_layers(net, "model.1.submodul", (1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"Closest names: \[.*'bottleneck'.*Roles of this network: \["):
        resolve_layers(net, "botleneck", (1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="list_layers"):
        resolve_layers(net, "")
    with pytest.raises(ValueError, match=r"Unknown layer 'model\.1\.submodul'"):  # the engines resolve the same way
        SegCAM(net, layers="model.1.submodul")
    with pytest.raises(ValueError, match=r"decoder\.7"):
        resolve_layers(net, "decoder.7", (1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="name a layer twice"):
        resolve_layers(net, ["model.1", "module.model.1"])


def test_list_layers_gives_every_called_module_with_shape_and_roles():
    net = small_unet()
    table = list_layers(net, (1, 1, 16, 16, 16))
    assert isinstance(table, LayerTable) and table.roles is not None and table.note == ""
    rows = {info.name: info for info in table}
    presets = layer_presets(net, (1, 1, 16, 16, 16))
    assert "pre_head" in rows[presets["pre_head"]].roles and "bottleneck" in rows[presets["bottleneck"]].roles
    assert rows["model.0"].output_shape == "(1, 4, 8, 8, 8)" and rows["model.0"].type == "ResidualUnit"
    assert "" not in rows  # the network itself is not a row
    text = str(table).splitlines()
    assert text[0].split() == ["name", "type", "output", "roles"] and len(text) == len(table) + 1
    tuple_table = {info.name: info for info in list_layers(WithTupleStage(), (1, 1, 4, 4, 4))}
    assert tuple_table["stage"].output_shape == "tuple[(1, 4, 4, 4, 4), dict{double: (1, 4, 4, 4, 4), half: (1, 4, 4, 4, 4)}]"


def test_list_layers_without_roles_says_why():
    class Identity3d(nn.Module):  # no module produces the output: no roles
        def forward(self, x):
            return x * 1

    table = list_layers(Identity3d(), (1, 1, 4, 4, 4))
    assert table.roles is None and table.note.startswith("no roles:")
    assert str(table).splitlines()[-1] == table.note
