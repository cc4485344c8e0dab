# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain``: Seg-CAMs of image files with a MONAI bundle or network, written on each input's own
voxel grid (the bundle's preprocessing inverted with MONAI's ``Invertd``) by the case loop of
:py:mod:`~monai_segcam.cli.cases`; what is written: ``docs/cli.md``, "What is written".
"""

from __future__ import annotations

import os
import warnings
from argparse import Namespace
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ..cam.regions import parse_region
from ..outputs import CAMWriter, CaseNamer, case_rows
from .cases import Explained, cam_settings, case_labels, check_classes, run_cases
from .io import CLIError, check_exists, first_line, read_image
from .model import LoadedModel, load_model, resolve_device
from .perturbation import OCCLUSION, channel_engine, occlusion_options, one_or_all, write_channel_csv
from .regions import grid_region

__all__ = ["cam_options", "parse_region", "run_explain"]


def _to_network_grid(points: np.ndarray, original: Any, image: Any) -> np.ndarray:
    """Continuous voxel coordinates on the network input's grid of voxel ``points`` ``(N, D)`` of the input file."""
    spatial = points.shape[1]
    source = np.asarray(original.affine, dtype=np.float64)
    target = np.asarray(image.affine, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ source.T @ np.linalg.inv(target).T)[:, :spatial]


def cam_options(args: Namespace) -> dict[str, Any]:
    """The CAM engines' ``amp`` and ``activation_budget`` from ``--amp`` and ``--activation-budget`` (MiB)."""
    if args.activation_budget is not None and args.activation_budget < 0:
        raise CLIError(f"--activation-budget must be non-negative, got {args.activation_budget:g}")
    budget = {} if args.activation_budget is None else {"activation_budget": int(args.activation_budget * 2**20)}
    return {"amp": args.amp, **budget}


def _engines(model: LoadedModel, args: Namespace, device: torch.device) -> tuple[Any, dict[str, Any], Any]:
    """One ``SlidingWindowSegCAM`` per method (``SegOcclusion`` for ``occlusion``) by
    :py:func:`~monai_segcam.inferers.make_segcam`, with the bundle inferer's window settings unless overridden (without
    a sliding-window inferer: one window of the whole volume).

    Returns:
        the sliding-window engine whose ``predict`` gives the stitched logits shared by all methods, the engines by
        method, and the channel table's ``ChannelAttribution`` (``None`` without ``--channel-table``).
    """
    from monai.inferers import SlidingWindowInferer

    from monai_segcam.inferers import make_segcam

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
    predict_only = [] if any(method != OCCLUSION for method in args.method) else ["hirescam"]  # for its predict()
    for method in [*args.method, *predict_only]:
        options = occlusion_options(args) if method == OCCLUSION else cam_options(args)
        try:
            engines[method] = make_segcam(model.network, inferer, layers=list(args.layers), method=method, **common,
                                          **options)  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
    predictor = next(engine for method, engine in engines.items() if method != OCCLUSION)
    channels = channel_engine(inferer, model.network, args, common)
    return predictor, {method: engines[method] for method in args.method}, channels


def _preprocess(path: str, original: Any, model: LoadedModel, args: Namespace) -> Any:
    """The network input ``(C, *spatial)``: the bundle's image transforms, or intensity scaling of ``original``."""
    if model.preprocessing is not None:
        try:
            return model.preprocessing({"image": path})["image"]
        except Exception as exc:
            raise CLIError(f"the bundle's preprocessing failed on {path}: {first_line(exc)}") from exc
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange

    image = original.float()
    if args.intensity_range is not None:
        a_min, a_max = args.intensity_range
        image = ScaleIntensityRange(a_min, a_max, 0.0, 1.0, clip=True)(image)
    if args.zscore:
        image = NormalizeIntensity(channel_wise=True)(image)
    return image


def _label_on_grid(path: str, image: Any) -> torch.Tensor:
    """The label map read from ``path``, resampled (nearest) onto the network input's grid ``(1, 1, *spatial)``."""
    from monai.transforms import ResampleToMatch

    label = read_image(path, "label")
    if label.shape[0] != 1:
        raise CLIError(f"label {path} has {label.shape[0]} channels; give a single-channel label map")
    if tuple(label.shape[1:]) != tuple(image.shape[1:]) or not torch.allclose(label.affine, image.affine, atol=1e-4):
        label = ResampleToMatch(mode="nearest")(label, image)
    return torch.as_tensor(label).round().long()[None]


def _to_original_grid(outputs: dict[str, torch.Tensor], image: Any, model: LoadedModel) -> dict[str, np.ndarray]:
    """Invert the bundle's spatial preprocessing on every ``(N, *spatial)`` output (linear interpolation)."""
    if model.preprocessing is None or not getattr(image, "applied_operations", None):
        return {key: value.detach().cpu().numpy() for key, value in outputs.items()}
    from monai.transforms import Invertd

    invert = Invertd(keys=list(outputs), transform=model.preprocessing, orig_keys="image", nearest_interp=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inverted = invert({"image": image, **{k: MetaTensor(v.detach().cpu()) for k, v in outputs.items()}})
    return {key: np.asarray(torch.as_tensor(inverted[key]).cpu().numpy()) for key in outputs}


def _load(path: str, label_path: str | None, model: LoadedModel, args: Namespace) -> tuple[Any, Any, Any]:
    """The input as read, the network input ``(C, *spatial)`` and the label on its grid (or ``None``)."""
    original = read_image(path)
    image = _preprocess(path, original, model, args)
    if model.in_channels is not None and image.shape[0] != model.in_channels:
        raise CLIError(
            f"{path} gives {image.shape[0]} channel(s) but the network expects {model.in_channels} (in_channels)"
        )
    return original, image, None if label_path is None else _label_on_grid(label_path, image)


def _classes(num_classes: int, model: LoadedModel, args: Namespace) -> list[int]:
    default = list(range(num_classes)) if model.multi_label else (list(range(1, num_classes)) or [0])
    return check_classes(args.classes if args.classes is not None else default, num_classes)


def _maps(engines: dict[str, Any], x: torch.Tensor, path: str, **call: Any) -> tuple[dict, torch.Tensor]:
    """The maps ``(n_classes, *spatial)`` on the network grid by ``(layer, method)``, and the explained region."""
    maps = {}
    for method, engine in engines.items():
        try:
            result = engine(x, **call)
        except ValueError as exc:
            raise CLIError(f"{path}: {exc}") from exc
        maps.update({(layer, method): cam.as_tensor()[0] for layer, cam in result.items()})
    return maps, result.region[0] > 0


def _explain_case(
    name: str, path: str, label_path: str | None, writer: CAMWriter, model: LoadedModel,
    engines: tuple[Any, dict[str, Any], Any], args: Namespace,
) -> Explained:  # fmt: skip
    """Compute one case's maps and write its segmentation (and channel table) with ``writer``; its statistics rows
    by :py:func:`~monai_segcam.metrics.cam_statistics` on the network grid, as every front door."""
    original, image, label = _load(path, label_path, model, args)
    x = torch.as_tensor(image).float()[None]
    predictor, by_method, channels = engines
    logits = predictor.predict(x).cpu()
    classes = _classes(logits.shape[1], model, args)
    region, region_summary = grid_region(
        args.region, original.shape[1:], image.shape[1:], lambda points: _to_network_grid(points, original, image)
    )
    call = {"classes": classes, "region": region, "pred": logits, "label": label}
    maps, explained = _maps(by_method, x, path, **call)
    rows = []
    for method in by_method:
        by_layer = {layer: cam for (layer, m), cam in maps.items() if m == method}
        rows += case_rows(name, method, by_layer, classes, explained, None if label is None else label[0], image)[0]
    keys = {f"cam{i}": key for i, key in enumerate(maps)}
    grid = _to_original_grid({"pred": logits[0], **{k: maps[v] for k, v in keys.items()}}, image, model)
    for value in grid.values():
        if tuple(value.shape[1:]) != tuple(original.shape[1:]):
            shape = tuple(original.shape[1:])
            raise CLIError(f"{path}: outputs came back on a {tuple(value.shape[1:])} grid, not the input's {shape}")
    masks = writer.write_segmentation(name, grid["pred"], np.asarray(original.affine), model.multi_label)
    modules = {layer.key: layer.module_name for layer in predictor.layers}
    inverted = {key: grid[tag] for tag, key in keys.items()}
    case = Explained(name, original, inverted, masks[classes], rows, classes, modules)
    if channels is not None:
        case.files.append(write_channel_csv(channels, x, name, call, args, writer.output_dir))
        writer.record(os.path.join(writer.output_dir, case.files[-1]["file"]))
    case.summary = {
        "input": {
            "path": os.path.abspath(path),
            "shape": list(original.shape[1:]),
            "channels": int(original.shape[0]),
            "affine": np.asarray(original.affine, dtype=np.float64).tolist(),
            "label": None if label_path is None else os.path.abspath(label_path),
        },
        "network_input_shape": list(image.shape),
        "network_input_affine": np.asarray(image.affine, dtype=np.float64).tolist(),
        "region_on_network_grid": region_summary,
        "predicted_voxels": {str(c): int(mask.sum()) for c, mask in enumerate(masks)},
    }
    return case


def _settings(args: Namespace, engine: Any, device: torch.device) -> dict[str, Any]:
    return {
        "layers": {layer.key: layer.module_name for layer in engine.layers},
        **cam_settings(args, engine, device),
        "roi_size": [int(r) for r in np.atleast_1d(engine.roi_size)],
        "overlap": engine.overlap,
        "sw_batch_size": engine.sw_batch_size,
        "mode": str(engine.mode),
        "normalize": args.normalize,
        "png": args.png,
        "perturbation": {
            "mask_size": args.mask_size, "stride": args.mask_stride, "baseline": args.baseline, "steps": args.steps,
        } if OCCLUSION in args.method or args.channel_table else None,
    }  # fmt: skip


def run_explain(args: Namespace) -> int:
    """Run ``monai-segcam explain``; returns the exit status (1 when a case failed)."""
    labels = case_labels(args, len(args.images))
    check_exists(args.images, "image")
    device = resolve_device(args.device)
    model = load_model(args, checkpoint_required=True)
    model.network.to(device)
    engines = _engines(model, args, device)
    described = {"model": model.description, "settings": _settings(args, engines[0], device)}
    namer = CaseNamer()  # the handlers' names: one input, one name by every front door

    def explain(name: str, path: str, label: str | None, writer: CAMWriter) -> Explained:
        return _explain_case(name, path, label, writer, model, engines, args)

    cases = [(namer(path), path, label) for path, label in zip(args.images, labels)]
    return run_cases(cases, explain, [layer.key for layer in engines[0].layers], args, described, model.class_names)
