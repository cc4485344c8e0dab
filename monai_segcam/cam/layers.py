# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Naming the layers a CAM is built from: ``named_modules()`` names, role presets and output selectors.

A layer is named by its ``named_modules()`` name (``"model.1.submodule.2"``), optionally followed by a selector
for modules whose output is a tuple, list or dict (``"swinViT[4]"``, ``"heads[seg]"``), or by a role preset that
is resolved per architecture:

- ``"bottleneck"``: the deepest, lowest-resolution stage;
- ``"pre_head"``: the last feature map before the segmentation head (highest resolution, closest to the decision);
- ``"encoder.N"`` / ``"decoder.N"``: the encoder and decoder stages, numbered in the order the forward pass runs
  them (``encoder.0`` is the first, highest-resolution encoder stage; ``decoder.0`` the first, deepest decoder stage).

Presets are known for MONAI's ``UNet``, ``BasicUNet``, ``DynUNet``, ``SegResNet`` and ``SwinUNETR``, also when the
network is wrapped (``DistributedDataParallel``, ``DataParallel``, ``torch.compile``) or is a submodule of the model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from monai.networks.nets import BasicUNet, DynUNet, SegResNet, SwinUNETR, UNet
from torch import nn

__all__ = ["ResolvedLayer", "LayerInfo", "LayerTable", "unwrap_network", "layer_presets", "resolve_layers", "list_layers"]

_SELECTOR = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<key>[^\[\]]+)\]$")


@dataclass(frozen=True)
class ResolvedLayer:
    """A requested layer after resolution.

    Attributes:
        key: the name as the user gave it (``"pre_head"``, ``"model.1"``, ``"swinViT[4]"``); keys of the result dict.
        module_name: the ``named_modules()`` name in the unwrapped network.
        module: the module whose forward output is captured.
        selector: index or key of the tensor inside a tuple/list/dict output, ``None`` for tensor outputs.
    """

    key: str
    module_name: str
    module: nn.Module = field(repr=False, compare=False)
    selector: int | str | None = None


def unwrap_network(network: nn.Module) -> nn.Module:
    """Return the user's network without ``DistributedDataParallel``/``DataParallel``/``torch.compile`` wrappers.

    Example:
        .. code-block:: python

            net = unwrap_network(torch.nn.parallel.DistributedDataParallel(model))  # -> model
    """
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            network = network._orig_mod
        else:
            return network


def _unet_roles(net: UNet) -> dict[str, str]:
    """MONAI ``UNet`` nests ``Sequential(down, SkipConnection(Sequential(...)), up)`` down to the bottom layer."""
    encoders, decoders = ["model.0"], []
    prefix, node = "model.1.submodule", net.model[1].submodule
    while isinstance(node, nn.Sequential) and len(node) == 3:
        encoders.append(f"{prefix}.0")
        decoders.insert(0, f"{prefix}.2")
        prefix, node = f"{prefix}.1.submodule", node[1].submodule
    return _roles(encoders, prefix, decoders, pre_head="model.1")


def _basic_unet_roles(net: BasicUNet) -> dict[str, str]:
    return _roles(["conv_0", "down_1", "down_2", "down_3"], "down_4", ["upcat_4", "upcat_3", "upcat_2", "upcat_1"])


def _dynunet_roles(net: DynUNet) -> dict[str, str]:
    encoders = ["input_block"] + [f"downsamples.{i}" for i in range(len(net.downsamples))]
    return _roles(encoders, "bottleneck", [f"upsamples.{i}" for i in range(len(net.upsamples))])


def _segresnet_roles(net: SegResNet) -> dict[str, str]:
    n_down = len(net.down_layers)
    encoders = [f"down_layers.{i}" for i in range(n_down - 1)]
    return _roles(encoders, f"down_layers.{n_down - 1}", [f"up_layers.{i}" for i in range(len(net.up_layers))])


def _swin_unetr_roles(net: SwinUNETR) -> dict[str, str]:
    encoders = ["encoder1", "encoder2", "encoder3", "encoder4"]
    return _roles(encoders, "encoder10", ["decoder5", "decoder4", "decoder3", "decoder2", "decoder1"])


def _roles(encoders: list[str], bottleneck: str, decoders: list[str], pre_head: str | None = None) -> dict[str, str]:
    roles = {f"encoder.{i}": name for i, name in enumerate(encoders)}
    roles["bottleneck"] = bottleneck
    roles.update({f"decoder.{i}": name for i, name in enumerate(decoders)})
    roles["pre_head"] = pre_head or decoders[-1]
    return roles


_ARCHITECTURES = ((UNet, _unet_roles), (BasicUNet, _basic_unet_roles), (DynUNet, _dynunet_roles),
                  (SegResNet, _segresnet_roles), (SwinUNETR, _swin_unetr_roles))  # fmt: skip


def layer_presets(network: nn.Module) -> dict[str, str]:
    """Role presets (``bottleneck``, ``pre_head``, ``encoder.N``, ``decoder.N``) -> module names for ``network``.

    The first module (in ``named_modules()`` order) of a known MONAI architecture is used, so a network wrapped in
    another module resolves too. Returns an empty dict for unknown architectures.

    Example:
        .. code-block:: python

            layer_presets(UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2)))["bottleneck"]
            # 'model.1.submodule.1.submodule.1.submodule.1.submodule'
    """
    for prefix, module in unwrap_network(network).named_modules():
        for arch, roles_of in _ARCHITECTURES:
            if isinstance(module, arch):
                return {role: f"{prefix}.{name}" if prefix else name for role, name in roles_of(module).items()}
    return {}


def _parse(name: str) -> tuple[str, int | str | None]:
    match = _SELECTOR.match(name)
    if match is None:
        return name, None
    key = match.group("key").strip().strip("'\"")
    return match.group("name"), int(key) if key.lstrip("-").isdigit() else key


def _strip_wrapper_prefixes(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def resolve_layers(network: nn.Module, layers: str | Sequence[str]) -> list[ResolvedLayer]:
    """Resolve layer names and presets to modules of the unwrapped ``network``.

    Raises:
        ValueError: an unknown name, listing the closest module names and presets.

    Example:
        .. code-block:: python

            [layer.module_name for layer in resolve_layers(net, ["bottleneck", "model.1"])]
    """
    net = unwrap_network(network)
    modules = dict(net.named_modules())
    presets = layer_presets(net)
    resolved = []
    for key in [layers] if isinstance(layers, str) else list(layers):
        name, selector = _parse(str(key))
        name = presets.get(name, name if name in modules else _strip_wrapper_prefixes(name))
        if name not in modules or name == "":
            candidates = [n for n in modules if n] + list(presets)
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
            hint = f" Closest names: {close}." if close else ""
            presets_hint = f" Presets for this network: {sorted(presets)}." if presets else ""
            raise ValueError(
                f"Unknown layer {key!r} for {type(net).__name__}.{hint}{presets_hint}"
                " Use monai_segcam.list_layers(network, input_shape) to see every layer with its output shape."
            )
        resolved.append(ResolvedLayer(key=str(key), module_name=name, module=modules[name], selector=selector))
    if len({(r.module_name, r.selector) for r in resolved}) != len(resolved):
        raise ValueError(f"Layers {list(map(str, [layers] if isinstance(layers, str) else layers))} name a layer twice.")
    return resolved


@dataclass
class LayerInfo:
    """One row of :py:func:`list_layers`: a module, its output shape and the presets naming it."""

    name: str
    type: str
    output_shape: str
    roles: list[str]


class LayerTable(list):
    """A list of :py:class:`LayerInfo` that prints as a table.

    Example:
        .. code-block:: python

            table = list_layers(net, (1, 1, 96, 96, 96))
            print(table)  # name, type, output shape, presets
            bottlenecks = [info.name for info in table if "bottleneck" in info.roles]
    """

    def __str__(self) -> str:
        width = max([len(info.name) for info in self] + [4])
        type_width = max([len(info.type) for info in self] + [4])
        lines = [f"{'name':<{width}}  {'type':<{type_width}}  {'output':<24}  presets"]
        for info in self:
            lines.append(f"{info.name:<{width}}  {info.type:<{type_width}}  {info.output_shape:<24}  {', '.join(info.roles)}")
        return "\n".join(lines)


def _describe(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return f"{type(output).__name__}[{', '.join(_describe(o) for o in output)}]"
    if isinstance(output, dict):
        return "dict{" + ", ".join(f"{k}: {_describe(v)}" for k, v in output.items()) + "}"
    return type(output).__name__


def list_layers(network: nn.Module, example_input_shape: Sequence[int], device: torch.device | str | None = None) -> LayerTable:
    """Run one forward pass on zeros and list every module with its output shape and the presets that name it.

    Args:
        network: the segmentation network (wrappers are unwrapped).
        example_input_shape: ``(B, C, *spatial)`` of the zero input, e.g. ``(1, 1, 96, 96, 96)``.
        device: where to run; defaults to the device of the network's first parameter.

    Returns:
        a :py:class:`LayerTable` (``print(table)`` shows it); modules never called in the forward are left out.

    Example:
        .. code-block:: python

            print(list_layers(UNet(3, 1, 3, (16, 32, 64), (2, 2)), (1, 1, 64, 64, 64)))
    """
    net = unwrap_network(network)
    if device is None:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
    roles_by_name: dict[str, list[str]] = {}
    for role, name in layer_presets(net).items():
        roles_by_name.setdefault(name, []).append(role)
    shapes: dict[str, str] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            shapes.setdefault(name, _describe(output))

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in net.named_modules() if name]
    training = [(module, module.training) for module in net.modules()]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(tuple(example_input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
    return LayerTable(
        LayerInfo(name, type(module).__name__, shapes[name], roles_by_name.get(name, []))
        for name, module in net.named_modules()
        if name in shapes
    )
