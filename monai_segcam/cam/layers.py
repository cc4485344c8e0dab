# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Naming the layers a CAM is built from: ``named_modules()`` names, layer roles and output selectors.

A layer is named by its ``named_modules()`` name (``"model.1.submodule.2"``), optionally followed by a selector
for modules whose output is a tuple, list or dict (``"swinViT[4]"``, ``"heads[seg]"``), or by a role, discovered
for any network from one traced forward pass (:py:mod:`monai_segcam.cam.roles`):

- ``"bottleneck"``: the deepest, lowest-resolution stage;
- ``"pre_head"``: the last feature map before the module that produces the logits;
- ``"encoder.N"`` / ``"decoder.N"``: the stages where the resolution goes down / comes back up, numbered in the
  order the forward pass runs them (``encoder.0`` is the first, highest-resolution encoder stage; ``decoder.0`` the
  first, deepest decoder stage).

The key ``"input"`` names the network's input itself (captured by a forward pre-hook): a CAM rule applied to it is
an input attribution (HiResCAM of the input is ``input_x_gradient``, see :py:mod:`monai_segcam.cam.attributions`).

Names are those of the network without its wrappers (``DistributedDataParallel``, ``DataParallel``,
``torch.compile``); a network that is a submodule of the model resolves too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .roles import LayerDiscoveryError, LayerRoles, discover_roles, roles_of_trace, trace_network

__all__ = [
    "INPUT_LAYER",
    "ResolvedLayer",
    "LayerInfo",
    "LayerTable",
    "unwrap_network",
    "layer_presets",
    "resolve_layers",
    "list_layers",
    "UnknownLayerError",
]

INPUT_LAYER = "input"
"""The layer key of the network's input (the maps of input attributions and occlusion)."""

_SELECTOR = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<key>[^\[\]]+)\]$")


@dataclass(frozen=True)
class ResolvedLayer:
    """A requested layer after resolution.

    Attributes:
        key: the name as the user gave it (``"pre_head"``, ``"model.1"``, ``"swinViT[4]"``); keys of the result dict.
        module_name: the ``named_modules()`` name in the unwrapped network.
        module: the module whose forward output is captured.
        selector: index or key of the tensor inside a tuple/list/dict output, ``None`` for tensor outputs.
        is_input: the layer is the network's input (``module`` is the network, its first positional argument is
            captured).
    """

    key: str
    module_name: str
    module: nn.Module = field(repr=False, compare=False)
    selector: int | str | None = None
    is_input: bool = False


def unwrap_network(network: nn.Module) -> nn.Module:
    """Return the user's network without ``DistributedDataParallel``/``DataParallel``/``torch.compile`` wrappers.

    Example:
        .. code-block:: python

            net = unwrap_network(torch.nn.parallel.DistributedDataParallel(model))  # -> model
    """
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(original := getattr(network, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            network = original
        else:
            return network


ROLE = re.compile(r"^(bottleneck|pre_head|(encoder|decoder)\.\d+)$")


def layer_presets(network: nn.Module, example_input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """The layer roles (``encoder.N``, ``bottleneck``, ``decoder.N``, ``pre_head``) -> module names of ``network``,
    discovered from one traced forward pass (:py:func:`~monai_segcam.cam.roles.discover_roles`; cached per network).

    Args:
        network: the segmentation network (wrappers such as DDP are unwrapped; names are those of the unwrapped one).
        example_input_shape: the probe's shape ``(B, C, *spatial)``; by default 64³, 96³, 128³ are tried.

    Raises:
        LayerDiscoveryError: the network does not run on the probe, or has no module producing the logits.

    Example:
        .. code-block:: python

            layer_presets(UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2)))["bottleneck"]
            # 'model.1.submodule.1.submodule.1.submodule.1.submodule'
    """
    return dict(discover_roles(unwrap_network(network), example_input_shape).roles)


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


_LIST_LAYERS_HINT = (
    " Use monai_segcam.list_layers(network, input_shape) to see every layer with its role and output shape."
)


class UnknownLayerError(ValueError):
    """A layer name or role the network does not have; ``reason`` is the message without the hint to
    :py:func:`list_layers` (a command line points to its own ``layers`` command instead).

    Example:
        .. code-block:: python

            try:
                resolve_layers(net, "model.9")
            except UnknownLayerError as error:
                print(error.reason)  # Unknown layer 'model.9' for UNet. Closest names: [...]
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason + _LIST_LAYERS_HINT)
        self.reason = reason


def _roles_hint(net: nn.Module, example_input_shape: Sequence[int] | None) -> str:
    try:
        return f" Roles of this network: {list(discover_roles(net, example_input_shape).roles)}."
    except LayerDiscoveryError:
        return ""


def _role(net: nn.Module, role: str, example_input_shape: Sequence[int] | None) -> str:
    roles = discover_roles(net, example_input_shape)
    if role in roles.roles:
        return roles.roles[role]
    reason = roles.missing.get(role if role in ("bottleneck", "pre_head") else f"{role.split('.')[0]}.N")
    raise UnknownLayerError(
        f"Layer role {role!r} does not exist in {type(net).__name__}: "
        + (reason if reason else f"the discovered roles are {list(roles.roles)}")
        + "."
    )


def resolve_layers(
    network: nn.Module, layers: str | Sequence[str], example_input_shape: Sequence[int] | None = None
) -> list[ResolvedLayer]:
    """Resolve layer names and roles to modules of the unwrapped ``network``.

    Roles are discovered only when one is requested (:py:func:`layer_presets`); module names need no forward pass.

    Args:
        network: the segmentation network.
        layers: names and roles, see the module's docstring.
        example_input_shape: the probe's shape for discovering roles ``(B, C, *spatial)``, e.g. the sliding window;
            by default 64³, 96³, 128³ are tried.

    Raises:
        ValueError: an unknown name, listing the closest module names and the roles; a role the network does not
            have, saying why; :py:class:`~monai_segcam.cam.roles.LayerDiscoveryError` when roles cannot be discovered.

    Example:
        .. code-block:: python

            [layer.module_name for layer in resolve_layers(net, ["bottleneck", "model.1"])]
    """
    net = unwrap_network(network)
    modules = dict(net.named_modules())
    resolved = []
    for key in [layers] if isinstance(layers, str) else list(layers):
        if str(key) == INPUT_LAYER:
            resolved.append(ResolvedLayer(key=INPUT_LAYER, module_name="", module=net, is_input=True))
            continue
        name, selector = _parse(str(key))
        if ROLE.match(name):
            name = _role(net, name, example_input_shape)
        elif name not in modules:
            name = _strip_wrapper_prefixes(name)
        if name not in modules or name == "":
            candidates = [n for n in modules if n] + ["bottleneck", "pre_head", "encoder.0", "decoder.0"]
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
            hint = f" Closest names: {close}." if close else ""
            raise UnknownLayerError(
                f"Unknown layer {key!r} for {type(net).__name__}.{hint}{_roles_hint(net, example_input_shape)}"
            )
        resolved.append(ResolvedLayer(key=str(key), module_name=name, module=modules[name], selector=selector))
    if len({(r.module_name, r.selector) for r in resolved}) != len(resolved):
        raise ValueError(f"Layers {list(map(str, [layers] if isinstance(layers, str) else layers))} name a layer twice.")
    return resolved


@dataclass
class LayerInfo:
    """One row of :py:func:`list_layers`: a module, its output shape and the roles naming it."""

    name: str
    type: str
    output_shape: str
    roles: list[str]


class LayerTable(list):
    """A list of :py:class:`LayerInfo` that prints as a table; ``roles`` is the discovered
    :py:class:`~monai_segcam.cam.roles.LayerRoles` (``None`` when discovery failed, ``note`` then says why).

    Example:
        .. code-block:: python

            table = list_layers(net, (1, 1, 96, 96, 96))
            print(table)  # name, type, output shape, roles
            bottlenecks = [info.name for info in table if "bottleneck" in info.roles]
    """

    roles: LayerRoles | None = None
    note: str = ""

    def __str__(self) -> str:
        width = max([len(info.name) for info in self] + [4])
        type_width = max([len(info.type) for info in self] + [4])
        lines = [f"{'name':<{width}}  {'type':<{type_width}}  {'output':<24}  roles"]
        for info in self:
            lines.append(f"{info.name:<{width}}  {info.type:<{type_width}}  {info.output_shape:<24}  {', '.join(info.roles)}")
        return "\n".join(lines + ([self.note] if self.note else []))


def _describe(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return f"{type(output).__name__}[{', '.join(_describe(o) for o in output)}]"
    if isinstance(output, dict):
        return "dict{" + ", ".join(f"{k}: {_describe(v)}" for k, v in output.items()) + "}"
    return type(output).__name__


def list_layers(network: nn.Module, example_input_shape: Sequence[int], device: torch.device | str | None = None) -> LayerTable:
    """Run one forward pass on a random input and list every module with its output shape and the roles it has.

    The same pass discovers the roles (:py:mod:`monai_segcam.cam.roles`).

    Args:
        network: the segmentation network (wrappers are unwrapped).
        example_input_shape: ``(B, C, *spatial)`` of the probe input, e.g. ``(1, 1, 96, 96, 96)``.
        device: where to run; defaults to the device of the network's first parameter.

    Returns:
        a :py:class:`LayerTable` (``print(table)`` shows it); modules never called in the forward are left out. When
        the roles cannot be discovered the table has no roles and its ``note`` says why.

    Example:
        .. code-block:: python

            print(list_layers(UNet(3, 1, 3, (16, 32, 64), (2, 2)), (1, 1, 64, 64, 64)))
    """
    net = unwrap_network(network)
    calls, output = trace_network(net, example_input_shape, device)
    table = LayerTable()
    try:
        table.roles = roles_of_trace(calls, output, example_input_shape)
    except (LayerDiscoveryError, TypeError) as exc:  # TypeError: an ambiguous output (select_logits)
        table.note = f"no roles: {exc}"
    roles_by_name: dict[str, list[str]] = {}
    for role, name in (table.roles.roles if table.roles else {}).items():
        roles_by_name.setdefault(name, []).append(role)
    shapes: dict[str, str] = {}
    for call in calls:
        if call.parent is not None:
            shapes.setdefault(call.name, _describe(call.output))
    table.extend(
        LayerInfo(name, type(module).__name__, shapes[name], roles_by_name.get(name, []))
        for name, module in net.named_modules()
        if name in shapes
    )
    return table
