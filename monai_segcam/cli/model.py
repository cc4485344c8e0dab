# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The network of a command: from a MONAI bundle or a dotted class path, with its checkpoint, device and inputs."""

from __future__ import annotations

import importlib
import json
import os
import re
from argparse import Namespace
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..utils import applies_sigmoid
from .io import CLIError, check_exists, first_line

__all__ = ["LoadedModel", "first_conv_in_channels", "load_checkpoint", "load_model", "resolve_device"]

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_CHECKPOINT_KEYS = ("model", "state_dict", "network", "model_state_dict")


@dataclass
class LoadedModel:
    """A network ready to explain, with what the bundle says about its inputs and outputs.

    Attributes:
        network: the segmentation network (weights loaded when a checkpoint was given).
        in_channels: input channels expected by the network, from the bundle metadata or its first convolution.
        preprocessing: the bundle's image transforms (applied to ``{"image": path}``), ``None`` without a bundle.
        inferer: the bundle's inferer, ``None`` without a bundle.
        class_names: output channel -> name, from the bundle metadata.
        multi_label: the outputs are independent sigmoid channels (the bundle's postprocessing applies a sigmoid).
        description: what the JSON summary records about the model.
    """

    network: nn.Module
    in_channels: int | None
    preprocessing: Any = None
    inferer: Any = None
    class_names: dict[int, str] = field(default_factory=dict)
    multi_label: bool = False
    description: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device, or a :py:class:`CLIError` when unavailable."""
    if not _DEVICE.match(name):
        raise CLIError(f"invalid --device {name!r}: use cpu, cuda, cuda:N or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name} requested but CUDA is not available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def first_conv_in_channels(network: nn.Module) -> int | None:
    """``in_channels`` of the first convolution registered in ``network``, ``None`` when it has none."""
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def _abbreviated(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_checkpoint(network: nn.Module, path: str) -> None:
    """Load a state dict (or a checkpoint dict holding one under ``model``/``state_dict``/``network``) into ``network``.

    ``torch.load(weights_only=True)`` is used; ``module.`` and ``_orig_mod.`` prefixes (DDP, ``torch.compile``) are
    stripped. Missing, unexpected and mis-shaped keys are reported in one :py:class:`CLIError`.
    """
    check_exists([path], "checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CLIError(f"cannot read checkpoint {path}: {first_line(exc)}") from exc
    if isinstance(state, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CLIError(f"checkpoint {path} holds no state dict (tensors by parameter name)")
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        found = {
            "missing keys": missing,
            "unexpected keys": unexpected,
            "shape mismatch (checkpoint vs network)": mismatched,
        }
        problems = [f"{label}: {_abbreviated(names)}" for label, names in found.items() if names]
        raise CLIError(f"checkpoint {path} does not match the network {type(network).__name__}: {'; '.join(problems)}")
    network.load_state_dict(state)


def _network_from_path(dotted: str, arguments: str) -> tuple[nn.Module, dict[str, Any]]:
    try:
        kwargs = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--network-args is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise CLIError('--network-args must be a JSON object, e.g. \'{"spatial_dims": 3, "in_channels": 1}\'')
    module_name, _, attribute = dotted.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CLIError(f"cannot import --network {dotted!r}: {exc}") from exc
    try:
        network = factory(**kwargs)
    except Exception as exc:
        raise CLIError(f"cannot build {dotted} with --network-args {arguments}: {exc}") from exc
    if not isinstance(network, nn.Module):
        raise CLIError(f"--network {dotted} built a {type(network).__name__}, not a torch.nn.Module")
    return network, kwargs


def _image_transforms(preprocessing: Any, key: str = "image") -> Any:
    """The bundle's preprocessing restricted to the transforms of ``key`` (other keys become optional)."""
    from monai.transforms import Compose, MapTransform

    transforms = preprocessing.flatten().transforms if isinstance(preprocessing, Compose) else [preprocessing]
    kept = []
    for transform in transforms:
        if isinstance(transform, MapTransform) and key in transform.keys:
            transform.allow_missing_keys = True
            kept.append(transform)
    return Compose(kept)


def _parse(parser: Any, name: str, configs: Sequence[str]) -> Any:
    try:
        return parser.get_parsed_content(name)
    except Exception as exc:
        raise CLIError(f"cannot build {name!r} from {', '.join(configs)}: {first_line(exc)}") from exc


def _load_bundle(bundle: str, config_files: Sequence[str]) -> LoadedModel:
    from monai.bundle import ConfigParser

    if not os.path.isdir(bundle):
        raise CLIError(f"bundle folder not found: {bundle}")
    configs = [c if os.path.isabs(c) or os.path.exists(c) else os.path.join(bundle, c) for c in config_files]
    check_exists(configs, "bundle config")
    parser = ConfigParser()
    try:
        parser.read_config(configs)
        metadata = os.path.join(bundle, "configs", "metadata.json")
        if os.path.exists(metadata):
            parser.read_meta(metadata)
    except Exception as exc:
        raise CLIError(f"cannot read bundle config {', '.join(configs)}: {exc}") from exc
    parser["bundle_root"] = bundle
    if parser.get("network_def") is None:
        raise CLIError(f"{', '.join(configs)} has no 'network_def'")
    network = _parse(parser, "network_def", configs)
    preprocessing = _parse(parser, "preprocessing", configs) if parser.get("preprocessing") is not None else None
    inferer = _parse(parser, "inferer", configs) if parser.get("inferer") is not None else None
    meta = parser.get(ConfigParser.meta_key) or {}
    data_format = meta.get("network_data_format", {}) if isinstance(meta, dict) else {}
    image_format = data_format.get("inputs", {}).get("image", {})
    channel_def = data_format.get("outputs", {}).get("pred", {}).get("channel_def", {})
    in_channels = image_format.get("num_channels")
    return LoadedModel(
        network=network,
        in_channels=int(in_channels) if in_channels is not None else first_conv_in_channels(network),
        preprocessing=None if preprocessing is None else _image_transforms(preprocessing),
        inferer=inferer,
        class_names={int(k): str(v) for k, v in channel_def.items() if str(k).isdigit()},
        multi_label=applies_sigmoid(parser.get("postprocessing")),
        description={
            "bundle": os.path.abspath(bundle),
            "config": [os.path.abspath(c) for c in configs],
            "bundle_name": meta.get("name") if isinstance(meta, dict) else None,
            "bundle_version": meta.get("version") if isinstance(meta, dict) else None,
        },
    )


def load_model(args: Namespace, checkpoint_required: bool) -> LoadedModel:
    """Build the network of ``--bundle`` or ``--network/--network-args`` and load its checkpoint.

    Args:
        args: the parsed command line.
        checkpoint_required: raise when no checkpoint is found (``explain``); otherwise weights stay random.
    """
    if args.bundle is not None:
        model = _load_bundle(args.bundle, args.config)
        checkpoint = args.checkpoint or os.path.join(args.bundle, "models", "model.pt")
    else:
        network, kwargs = _network_from_path(args.network, args.network_args)
        model = LoadedModel(
            network=network,
            in_channels=first_conv_in_channels(network),
            description={"network": args.network, "network_args": kwargs},
        )
        checkpoint = args.checkpoint
    model.network = model.network.to("cpu").eval()
    if checkpoint is not None and (checkpoint_required or args.checkpoint is not None):
        load_checkpoint(model.network, checkpoint)
        model.description["checkpoint"] = os.path.abspath(checkpoint)
    elif checkpoint_required:
        raise CLIError("explain needs trained weights: give --checkpoint FILE")
    model.description["class"] = f"{type(model.network).__module__}.{type(model.network).__name__}"
    model.description["in_channels"] = model.in_channels
    model.multi_label = model.multi_label or getattr(args, "multi_label", False)
    model.description["multi_label"] = model.multi_label
    return model
