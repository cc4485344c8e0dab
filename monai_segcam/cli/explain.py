# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain``: Seg-CAMs of image files with a MONAI bundle or network by
:py:class:`~monai_segcam.files.FileSegCAM` (on each input's own voxel grid), written by the case loop of
:py:mod:`~monai_segcam.cli.cases`; what is written: ``docs/cli.md``, "What is written".
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import torch

from ..cam.layers import UnknownLayerError
from ..cam.prompts import parse_prompt
from ..files import FileSegCAM
from ..outputs import CaseNamer, ExplainedCase
from ..utils.loading import LoadedModel
from .cases import cam_settings, case_labels, run_cases
from .io import CLIError
from .model import layers_command, load_model, resolve_device
from .perturbation import channel_engine, occlusion_options, one_or_all

__all__ = ["cam_options", "run_explain"]


def cam_options(args: Namespace) -> dict[str, Any]:
    """The explainers' ``amp`` and ``activation_budget`` from ``--amp`` and ``--activation-budget`` (MiB)."""
    if args.activation_budget is not None and args.activation_budget < 0:
        raise CLIError(f"--activation-budget must be non-negative, got {args.activation_budget:g}")
    budget = {} if args.activation_budget is None else {"activation_budget": int(args.activation_budget * 2**20)}
    return {"amp": args.amp, **budget}


def _pipeline(model: LoadedModel, args: Namespace, device: torch.device) -> FileSegCAM:
    """The file pipeline with one explainer per method, each built from an
    :py:class:`~monai_segcam.explainers.ExplainRequest` with the bundle inferer's window settings unless overridden
    (without a sliding-window inferer: one window of the whole volume) and the options of its kind, and with
    ``--channel-table`` the channels' ``ChannelAttribution``."""
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose, NormalizeIntensity, ScaleIntensityRange

    from monai_segcam.explainers import ExplainRequest

    inferer = model.inferer if isinstance(model.inferer, SlidingWindowInferer) else SlidingWindowInferer(roi_size=-1)
    overrides = {"roi_size": one_or_all(args.roi_size), "overlap": args.overlap, "sw_batch_size": args.sw_batch_size}
    overrides["mode"] = args.mode
    common = {
        "target": args.target,
        "multi_label": model.multi_label,
        "sw_device": device,
        "device": None,
        "progress": not args.quiet,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    engines = {}
    for method in args.method:
        try:
            request = ExplainRequest.from_inferer(inferer, method=method, layers=tuple(args.layers), options=common)
            request = request.with_options(**cam_options(args), **occlusion_options(args))
            engines[method] = request.build(model.network)
        except UnknownLayerError as exc:
            raise CLIError(f"{exc.reason} Run `{layers_command(args)}` to see every layer with its role and output "
                           "shape.") from exc  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
    intensity: list[Any] = []
    if args.intensity_range is not None:
        a_min, a_max = args.intensity_range
        intensity.append(ScaleIntensityRange(a_min, a_max, 0.0, 1.0, clip=True))
    if args.zscore:
        intensity.append(NormalizeIntensity(channel_wise=True))
    channels = channel_engine(inferer, model.network, args, common)
    return FileSegCAM(model, engines, None, Compose(intensity) if intensity else None, channels, args.channel_names)


def _settings(args: Namespace, files: FileSegCAM, device: torch.device) -> dict[str, Any]:
    """The JSON's settings: every explainer's own (:py:meth:`~monai_segcam.cam.base.Explainer.settings`), the
    layers of those that have layers, and the command's output options."""
    explained = [engine.settings() for engine in files.engines.values()]
    layers = {key: name for settings in explained for key, name in settings.get("layers", {}).items()}
    window = {k: explained[0].get(k) for k in ("roi_size", "overlap", "sw_batch_size", "mode")}
    perturbation = {"mask_size": args.mask_size, "stride": args.mask_stride, "baseline": args.baseline,
                    "steps": args.steps}  # fmt: skip
    perturbs = args.channel_table or any("mask_size" in settings for settings in explained)
    return {"layers": layers, **cam_settings(args, explained[0], device), **window, "normalize": args.normalize,
            "png": args.png, "perturbation": perturbation if perturbs else None}  # fmt: skip


def run_explain(args: Namespace) -> int:
    """Run ``monai-segcam explain``; returns the exit status (1 when a case failed)."""
    labels = case_labels(args, len(args.images))
    device = resolve_device(args.device)
    model = load_model(args, checkpoint_required=True)
    model.network.to(device)
    files = _pipeline(model, args, device)
    try:  # before any prediction, and once for the whole batch (missing files are the cases' own failures)
        files.check_classes(args.classes)
    except ValueError as exc:
        raise CLIError(f"--classes {' '.join(map(str, args.classes))}: {exc}") from exc
    described = {"model": model.description, "settings": _settings(args, files, device)}
    namer = CaseNamer()  # the handlers' names: one input, one name by every front door

    try:
        prompt = parse_prompt(getattr(args, "prompt", None))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if prompt and not hasattr(files.predictor, "prompt_arguments"):
        raise CLIError(f"--prompt needs a promptable network (VISTA3D); {type(model.network).__name__} takes none")

    def explain(name: str, path: str, label: str | None) -> ExplainedCase:
        return files(path, label, args.classes, args.region, name, getattr(args, "contrast", None), prompt)

    cases = [(namer(path), path, label) for path, label in zip(args.images, labels)]
    keys = {method: engine.result_keys for method, engine in files.engines.items()}
    return run_cases(cases, explain, keys, args, described, model.class_names)
