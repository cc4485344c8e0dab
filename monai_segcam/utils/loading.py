# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Loading a network to explain: a MONAI bundle's network, preprocessing, inferer and metadata, and checkpoints."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .postprocessing import applies_sigmoid

__all__ = ["LoadedModel", "first_conv_in_channels", "first_line", "load_bundle", "load_checkpoint", "load_network"]

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
        description: what a summary records about the model (bundle folder, configs, name and version).
    """

    network: nn.Module
    in_channels: int | None
    preprocessing: Any = None
    inferer: Any = None
    class_names: dict[int, str] = field(default_factory=dict)
    multi_label: bool = False
    description: dict[str, Any] = field(default_factory=dict)


def first_conv_in_channels(network: nn.Module) -> int | None:
    """``in_channels`` of the first convolution registered in ``network``, ``None`` when it has none.

    Example:
        .. code-block:: python

            first_conv_in_channels(UNet(3, in_channels=4, out_channels=3, channels=(8, 16), strides=(2,)))  # 4
    """
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def _abbreviated(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_checkpoint(network: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict (or a checkpoint dict holding one under ``model``/``state_dict``/``network``) into ``network``.

    ``torch.load(weights_only=True)`` is used; ``module.`` and ``_orig_mod.`` prefixes (DDP, ``torch.compile``) are
    stripped.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file cannot be read or holds no state dict; missing, unexpected and mis-shaped keys, in one
            message.

    Example:
        .. code-block:: python

            load_checkpoint(net, "bundles/segcam_demo/models/model.pt")
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {first_line(exc)}") from exc
    if isinstance(state, dict):
        state = next((state[key] for key in _CHECKPOINT_KEYS if isinstance(state.get(key), dict)), state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} holds no state dict (tensors by parameter name)")
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    expected = network.state_dict()
    found = {
        "missing keys": [k for k in expected if k not in state],
        "unexpected keys": [k for k in state if k not in expected],
        "shape mismatch (checkpoint vs network)": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    problems = [f"{label}: {_abbreviated(names)}" for label, names in found.items() if names]
    if problems:
        raise ValueError(f"checkpoint {path} does not match the network {type(network).__name__}: {'; '.join(problems)}")
    network.load_state_dict(state)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-line report.

    Example:
        >>> first_line(ValueError("bad key\\nTraceback ..."))
        'bad key'
    """
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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


def _parsed(parser: Any, name: str, configs: Sequence[str]) -> Any:
    """The parsed content of ``name``, ``None`` when the configs do not define it."""
    if parser.get(name) is None:
        return None
    try:
        return parser.get_parsed_content(name)
    except Exception as exc:
        raise ValueError(f"cannot build {name!r} from {', '.join(configs)}: {first_line(exc)}") from exc


def load_bundle(bundle: str | os.PathLike, config_files: Sequence[str] = ("configs/inference.json",)) -> LoadedModel:
    """The network (random weights: see :py:func:`load_checkpoint`), image preprocessing, inferer, class names and
    multi-label setting of a MONAI bundle, from its configs and ``configs/metadata.json``.

    Args:
        bundle: the bundle folder.
        config_files: config files, relative to the bundle (or to the working directory, or absolute).

    Raises:
        FileNotFoundError: no bundle folder or config file.
        ValueError: the configs cannot be read, have no ``network_def``, or one of their parts cannot be built.

    Example:
        .. code-block:: python

            model = load_bundle("bundles/segcam_demo")
            load_checkpoint(model.network, "bundles/segcam_demo/models/model.pt")
            cam = make_segcam(model.network, model.inferer, layers="pre_head")
    """
    from monai.bundle import ConfigParser

    bundle = os.fspath(bundle)
    if not os.path.isdir(bundle):
        raise FileNotFoundError(f"bundle folder not found: {bundle}")
    configs = [c if os.path.isabs(c) or os.path.exists(c) else os.path.join(bundle, c) for c in config_files]
    for config in configs:
        if not os.path.exists(config):
            raise FileNotFoundError(f"bundle config not found: {config}")
    parser = ConfigParser()
    try:
        parser.read_config(configs)
        metadata = os.path.join(bundle, "configs", "metadata.json")
        if os.path.exists(metadata):
            parser.read_meta(metadata)
    except Exception as exc:
        raise ValueError(f"cannot read bundle config {', '.join(configs)}: {exc}") from exc
    parser["bundle_root"] = bundle
    network = _parsed(parser, "network_def", configs)
    if network is None:
        raise ValueError(f"{', '.join(configs)} has no 'network_def'")
    preprocessing = _parsed(parser, "preprocessing", configs)
    meta = parser.get(ConfigParser.meta_key) or {}
    meta = meta if isinstance(meta, dict) else {}
    data_format = meta.get("network_data_format", {})
    in_channels = data_format.get("inputs", {}).get("image", {}).get("num_channels")
    channel_def = data_format.get("outputs", {}).get("pred", {}).get("channel_def", {})
    return LoadedModel(
        network=network,
        in_channels=int(in_channels) if in_channels is not None else first_conv_in_channels(network),
        preprocessing=None if preprocessing is None else _image_transforms(preprocessing),
        inferer=_parsed(parser, "inferer", configs),
        class_names={int(k): str(v) for k, v in channel_def.items() if str(k).isdigit()},
        multi_label=applies_sigmoid(parser.get("postprocessing")),
        description={
            "bundle": os.path.abspath(bundle),
            "config": [os.path.abspath(c) for c in configs],
            "bundle_name": meta.get("name"),
            "bundle_version": meta.get("version"),
        },
    )


def load_network(path: str, kwargs: Mapping[str, Any] | None = None) -> LoadedModel:
    """A network built from its class's dotted path and keyword arguments (random weights: see
    :py:func:`load_checkpoint`), without preprocessing or inferer; ``in_channels`` from its first convolution.

    Raises:
        ValueError: the path cannot be imported, the arguments do not build it, or it builds no ``torch.nn.Module``.

    Example:
        .. code-block:: python

            model = load_network("monai.networks.nets.BasicUNet", {"spatial_dims": 3, "out_channels": 3})
    """
    kwargs = dict(kwargs or {})
    module_name, _, attribute = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import network {path!r}: {exc}") from exc
    try:
        network = factory(**kwargs)
    except Exception as exc:
        raise ValueError(f"cannot build {path} with the arguments {kwargs}: {first_line(exc)}") from exc
    if not isinstance(network, nn.Module):
        raise ValueError(f"{path} built a {type(network).__name__}, not a torch.nn.Module")
    return LoadedModel(network, first_conv_in_channels(network), description={"network": path, "network_args": kwargs})
