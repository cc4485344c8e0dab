# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain IMAGE... --nnunet MODEL_FOLDER``: Seg-CAMs of an nnU-Net v2 model as nnU-Net predicts
(:py:class:`~monai_segcam.nnunet.NNUNetSegCAM`), its cases grouped by :py:func:`~monai_segcam.nnunet.group_cases`
and written by the case loop of :py:mod:`~monai_segcam.cli.cases`, on each input's own grid; see ``docs/nnunet.md``.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import torch

from ..nnunet.cases import group_cases
from ..outputs import ExplainedCase, safe_token
from ..utils.loading import first_line
from .cases import cam_settings, case_labels, run_cases
from .explain import cam_options
from .io import CLIError, check_exists
from .model import resolve_device

__all__ = ["group_cases", "run_explain_nnunet", "run_layers_nnunet"]

_NOT_FOR_NNUNET = ("roi_size", "overlap", "mode", "checkpoint")


def _load(args: Namespace, device: torch.device, folds: Sequence[int | str] | None = None) -> Any:
    from monai_segcam.nnunet import NNUNetModel

    folds = folds if folds is not None else args.folds
    folds = None if folds is None else [int(f) if str(f).isdigit() else str(f) for f in folds]
    try:
        return NNUNetModel(
            args.nnunet, folds, args.nnunet_checkpoint, not args.no_mirroring, args.tile_step_size, device=device
        )
    except (ImportError, FileNotFoundError, NotImplementedError, ValueError, RuntimeError) as exc:
        raise CLIError(first_line(exc)) from exc


def _description(model: Any, args: Namespace, device: torch.device, engine: Any) -> dict[str, Any]:
    """The JSON's ``settings``; ``amp`` and ``activation_budget`` as the CAM ``engine`` runs them."""
    return {
        "nnunet_model_folder": os.path.abspath(model.folder),
        "trainer": model.trainer_name,
        "configuration": model.configuration_name,
        "folds": [str(f) for f in model.folds],
        "checkpoint": model.checkpoint_name,
        "mirror_axes": list(model.mirror_axes),
        "patch_size": list(model.patch_size),
        "tile_step_size": model.tile_step_size,
        "layers": list(args.layers),
        **cam_settings(args, engine.settings(), device),
    }


def run_explain_nnunet(args: Namespace) -> int:
    """Run ``monai-segcam explain --nnunet``; returns the exit status (1 when a case failed)."""
    if getattr(args, "contrast", None) is not None:
        raise CLIError("--contrast is not available with --nnunet yet: explain the case with --bundle or --network")
    from monai_segcam.nnunet import NNUNetSegCAM, explain_nnunet_case

    given = [f"--{name.replace('_', '-')}" for name in _NOT_FOR_NNUNET if getattr(args, name, None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to --nnunet: the tiles and weights come from the model folder")
    check_exists(args.images, "image")
    device = resolve_device(args.device)
    model = _load(args, device)
    try:
        grouped = group_cases(args.images, model.num_input_channels)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    labels = case_labels(args, len(grouped))
    try:
        cams = {
            m: NNUNetSegCAM(model, args.layers, m, args.target, sw_batch_size=args.sw_batch_size or 1,
                            progress=not args.quiet, **cam_options(args))
            for m in args.method
        }  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    settings = _description(model, args, device, next(iter(cams.values())).engine)

    def explain(name: str, files: list[str], label: str | None) -> ExplainedCase:
        return explain_nnunet_case(cams, files, label, args.classes, args.region, name)

    cases = [(safe_token(name, "case"), files, label) for (name, files), label in zip(grouped, labels)]
    keys = {method: cam.engine.result_keys for method, cam in cams.items()}
    return run_cases(cases, explain, keys, args, {"settings": settings}, model.class_names)


def run_layers_nnunet(args: Namespace) -> int:
    """Run ``monai-segcam layers --nnunet``: the layer table of the model's network and its role presets."""
    from monai_segcam.nnunet import nnunet_layer_presets

    from .layers import show_layers

    model = _load(args, resolve_device(args.device), folds=args.folds[:1] if args.folds else None)
    shape = args.input_shape or [1, model.num_input_channels, *model.patch_size]
    return show_layers(model.networks[0], shape, args.quiet, nnunet_layer_presets(model.networks[0]))
