# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The network of a command: ``--bundle`` or ``--network``/``--network-args`` (loaded by
:py:mod:`monai_segcam.utils.loading`), with its checkpoint, and ``--device``."""

from __future__ import annotations

import json
import os
import re
from argparse import Namespace
from typing import Any

import torch

from ..utils.loading import LoadedModel, load_bundle, load_checkpoint, load_network
from .io import CLIError

__all__ = ["layers_command", "load_model", "resolve_device"]

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


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


def layers_command(args: Namespace) -> str:
    """The ``monai-segcam layers`` command listing the layers of the model a command names (for error messages)."""
    if getattr(args, "nnunet", None):
        return f"monai-segcam layers --nnunet {args.nnunet}"
    if args.bundle is not None:
        return f"monai-segcam layers --bundle {args.bundle}"
    return f"monai-segcam layers --network {args.network} --network-args '{args.network_args}'"


def _json_object(text: str) -> dict[str, Any]:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--network-args is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise CLIError('--network-args must be a JSON object, e.g. \'{"spatial_dims": 3, "in_channels": 1}\'')
    return kwargs


def load_model(args: Namespace, checkpoint_required: bool) -> LoadedModel:
    """Build the network of ``--bundle`` or ``--network/--network-args`` and load its checkpoint.

    Args:
        args: the parsed command line.
        checkpoint_required: raise when no checkpoint is found (``explain``); otherwise weights stay random.
    """
    try:
        if args.bundle is not None:
            model = load_bundle(args.bundle, args.config)
            checkpoint = args.checkpoint or os.path.join(args.bundle, "models", "model.pt")
        else:
            model = load_network(args.network, _json_object(args.network_args))
            checkpoint = args.checkpoint
        model.network = model.network.to("cpu").eval()
        if checkpoint is not None and (checkpoint_required or args.checkpoint is not None):
            load_checkpoint(model.network, checkpoint)
            model.description["checkpoint"] = os.path.abspath(checkpoint)
        elif checkpoint_required:
            raise CLIError("explain needs trained weights: give --checkpoint FILE")
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    model.description["class"] = f"{type(model.network).__module__}.{type(model.network).__name__}"
    model.description["in_channels"] = model.in_channels
    model.multi_label = model.multi_label or getattr(args, "multi_label", False)
    model.description["multi_label"] = model.multi_label
    return model
