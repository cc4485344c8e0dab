# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain``: Seg-CAMs of image files, written on each input's own voxel grid.

Per case (one input image) the command writes, into ``OUTPUT/<case>/``:

- ``<case>_seg.nii.gz``: the segmentation (argmax of the stitched logits; for multi-label networks one channel per
  class, logit > 0, stored as ``(X, Y, Z, C)``);
- ``<case>_cam_<method>_<layer>_class<c>.nii.gz``: one float map per class, layer and method (the same names as
  the bundles' :py:class:`~monai_segcam.handlers.SegCAMHandler` writes);
- ``<case>_cam_<method>_<layer>_class<c>.png``: orthogonal slices through the map's peak (or the region centroid),
  and ``<case>_cam_class<c>_panel.png`` (layers x methods) when several maps explain a class;
- ``<case>_segcam.json``: inputs, model, settings and, per written file, its class/layer/method and statistics;

and ``OUTPUT/segcam_stats.csv``: one row per case, layer, method and class with the statistics every front door
computes (:py:func:`~monai_segcam.metrics.cam_statistics`, on the network grid), failed cases with their error.

Every NIfTI has the input's shape and affine: the bundle's preprocessing is inverted with MONAI's ``Invertd``.
Every file is written atomically by the one writer (:py:class:`~monai_segcam.outputs.CAMWriter`), and a case's files
are kept all or none.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ..metrics import STAT_COLUMNS
from ..outputs import (
    CAMWriter,
    CaseNamer,
    case_rows,
    merge_rows,
    segmentation_file_name,
    table_rows,
    write_table,
    write_text,
)
from .io import CLIError, check_exists, read_image
from .model import LoadedModel, load_model, resolve_device
from .perturbation import OCCLUSION, channel_engine, occlusion_engine, write_channel_csv

__all__ = ["parse_region", "run_explain"]

_LABEL_REGIONS = ("label", "fp", "fn")
_REGIONS = ("pred", "all", "empty", "label", "fp", "fn", "component")
_REGION_FORMS = "component:N, voxel:I,J,K or box:I0,J0,K0:I1,J1,K1"


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of voxel indices") from None


def parse_region(text: str) -> tuple[str, list[tuple[int, ...]]]:
    """Parse a ``--region`` value into its kind and its voxel-index arguments.

    Kinds: ``pred``, ``all``, ``empty``, ``label``, ``fp``, ``fn``, ``component[:N]`` (the N-th largest component,
    0 = largest), ``voxel:I,J,K`` (one voxel) and ``box:I0,J0,K0:I1,J1,K1`` (two opposite corner voxels, both
    included); voxel indices are those of the input file, in the order nibabel and MONAI read them.

    Example:
        >>> parse_region("box:4,5,3:10,12,8")
        ('box', [(4, 5, 3), (10, 12, 8)])
    """
    kind, *parts = text.split(":")
    if kind == "component" and len(parts) <= 1 and all(p.isdigit() for p in parts):
        return kind, [(int(parts[0]),)] if parts else []
    if kind in _REGIONS and kind != "component" and not parts:
        return kind, []
    if kind in ("voxel", "box") and len(parts) == (1 if kind == "voxel" else 2):
        points = [_indices(part) for part in parts]
        if any(len(point) != len(points[0]) for point in points):
            raise ValueError(f"{text!r}: both corners need the same number of indices")
        return kind, points
    raise ValueError(f"unknown region {text!r}: use one of {', '.join(_REGIONS)}, or {_REGION_FORMS}")


def _to_network_grid(points: np.ndarray, original: Any, image: Any) -> np.ndarray:
    """Continuous voxel coordinates on the network input's grid of voxel ``points`` ``(N, D)`` of the input file."""
    spatial = points.shape[1]
    source = np.asarray(original.affine, dtype=np.float64)
    target = np.asarray(image.affine, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ source.T @ np.linalg.inv(target).T)[:, :spatial]


def _region(parsed: tuple[str, list[tuple[int, ...]]], original: Any, image: Any) -> tuple[Any, dict[str, Any]]:
    """The region object for the engines, and its description for the JSON summary.

    A ``voxel`` or ``box`` given on the input file's grid is moved onto the network input's grid through both
    affines (the bundle's preprocessing may reorient and resample): the voxel nearest to the same world position,
    and the smallest box holding the nearest voxels of the corners.
    """
    from monai_segcam.cam import Box, Component, Voxel

    kind, points = parsed
    if kind == "component":
        return Component(index=points[0][0] if points else 0), {"kind": kind}
    if kind not in ("voxel", "box"):
        return kind, {"kind": kind}
    shape, grid = tuple(original.shape[1:]), tuple(image.shape[1:])
    for point in points:
        if len(point) != len(shape) or any(not 0 <= i < s for i, s in zip(point, shape)):
            raise CLIError(f"--region {kind}: voxel {point} lies outside the image (shape {shape})")
    corners = np.array(np.meshgrid(*[sorted({p[d] for p in points}) for d in range(len(shape))], indexing="ij"))
    mapped = np.rint(_to_network_grid(corners.reshape(len(shape), -1).T.astype(np.float64), original, image))
    start = np.clip(mapped.min(0), 0, np.array(grid) - 1).astype(int)
    end = np.clip(mapped.max(0), 0, np.array(grid) - 1).astype(int) + 1
    if kind == "voxel":
        return Voxel(tuple(start.tolist())), {"kind": kind, "input_voxel": list(points[0]), "voxel": start.tolist()}
    description = {"kind": kind, "input_corners": [list(p) for p in points], "start": start.tolist()}
    return Box(tuple(start.tolist()), tuple(end.tolist())), {**description, "end": end.tolist()}


def _engines(model: LoadedModel, args: Namespace, device: torch.device) -> tuple[Any, dict[str, Any], Any]:
    """One ``SlidingWindowSegCAM`` per method (``SegOcclusion`` for ``occlusion``), with the bundle inferer's window
    settings unless overridden.

    Returns:
        the sliding-window engine whose ``predict`` gives the stitched logits shared by all methods, the engines by
        method, and the channel table's ``ChannelAttribution`` (``None`` without ``--channel-table``).
    """
    from monai.inferers import SlidingWindowInferer

    from monai_segcam.cam import SlidingWindowSegCAM

    roi_size = None if args.roi_size is None else args.roi_size[0] if len(args.roi_size) == 1 else tuple(args.roi_size)
    overrides = {
        "roi_size": roi_size,
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "mode": args.mode,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    common = {
        "layers": list(args.layers),
        "target": args.target,
        "multi_label": model.multi_label,
        "sw_device": device,
        "device": None,
        "progress": not args.quiet,
        **overrides,
    }
    engines = {}
    predict_only = [] if any(method != OCCLUSION for method in args.method) else ["hirescam"]  # for its predict()
    for method in [*args.method, *predict_only]:
        try:
            if method == OCCLUSION:
                engines[method] = occlusion_engine(model, args, common)
            elif isinstance(model.inferer, SlidingWindowInferer):
                engines[method] = SlidingWindowSegCAM.from_inferer(
                    model.inferer, model.network, method=method, **common
                )
            else:
                engines[method] = SlidingWindowSegCAM(model.network, **{"roi_size": -1, **common, "method": method})
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    predictor = next(engine for method, engine in engines.items() if method != OCCLUSION)
    return predictor, {method: engines[method] for method in args.method}, channel_engine(model, args, common)


def _preprocess(path: str, original: Any, model: LoadedModel, args: Namespace) -> Any:
    """The network input ``(C, *spatial)``: the bundle's image transforms, or intensity scaling of ``original``."""
    if model.preprocessing is not None:
        try:
            return model.preprocessing({"image": path})["image"]
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CLIError(f"the bundle's preprocessing failed on {path}: {reason}") from exc
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
    classes = args.classes if args.classes is not None else default
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise CLIError(f"--classes {bad} out of range: the network has {num_classes} output channels")
    return classes


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
    path: str, label_path: str | None, name: str, model: LoadedModel, engines: tuple[Any, dict[str, Any], Any],
    args: Namespace, output: str, settings: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Compute and write one case's files into ``output/name`` (all or none); returns its JSON summary and its
    statistics rows (:py:func:`~monai_segcam.metrics.cam_statistics` on the network grid, as every front door)."""
    start = time.perf_counter()
    original, image, label = _load(path, label_path, model, args)
    x = torch.as_tensor(image).float()[None]
    predictor, engines, channels = engines
    logits = predictor.predict(x).cpu()
    classes = _classes(logits.shape[1], model, args)
    region, region_summary = _region(parse_region(args.region), original, image)
    call = {"classes": classes, "region": region, "pred": logits, "label": label}
    maps, explained = _maps(engines, x, path, **call)
    rows = []
    for method in engines:
        by_layer = {layer: cam for (layer, m), cam in maps.items() if m == method}
        rows += case_rows(name, method, by_layer, classes, explained, None if label is None else label[0], image)[0]
    keys = {f"cam{i}": key for i, key in enumerate(maps)}
    grid = _to_original_grid({"pred": logits[0], **{k: maps[v] for k, v in keys.items()}}, image, model)
    shape, affine = tuple(original.shape[1:]), original.affine.numpy().astype(np.float64)
    for value in grid.values():
        if tuple(value.shape[1:]) != shape:
            raise CLIError(f"{path}: outputs came back on a {tuple(value.shape[1:])} grid, not the input's {shape}")
    inverted = {key: grid[tag] for tag, key in keys.items()}
    writer = CAMWriter(os.path.join(output, name), png=args.png, center=args.center)
    with writer.all_or_nothing():
        masks = writer.write_segmentation(name, grid["pred"], affine, model.multi_label)
        layer_modules = {layer.key: layer.module_name for layer in predictor.layers}
        files = _write_cams(writer, name, original, inverted, masks[classes], rows, classes, model, args)
        for entry in files:
            if entry["kind"] == "cam":
                entry.update(module=layer_modules.get(entry["layer"]))  # occlusion's "input" has no module
        if channels is not None:
            files.append(write_channel_csv(channels, x, name, call, args, writer.output_dir))
            writer.record(os.path.join(writer.output_dir, files[-1]["file"]))
        summary = {
            "case": name,
            "input": {
                "path": os.path.abspath(path),
                "shape": list(shape),
                "channels": int(original.shape[0]),
                "affine": affine.tolist(),
                "label": None if label_path is None else os.path.abspath(label_path),
            },
            "network_input_shape": list(image.shape),
            "network_input_affine": np.asarray(image.affine, dtype=np.float64).tolist(),
            "region_on_network_grid": region_summary,
            "classes": {str(c): model.class_names.get(c) for c in classes},
            "predicted_voxels": {str(c): int(mask.sum()) for c, mask in enumerate(masks)},
            "files": [{"file": segmentation_file_name(name), "kind": "segmentation"}, *files],
            "seconds": round(time.perf_counter() - start, 3),
        }
        summary.update(model=model.description, settings=settings)
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
        writer.record(write_text(text, os.path.join(writer.output_dir, f"{name}_segcam.json")))
    return summary, rows


def _write_cams(writer, name, original, maps, masks, rows, classes, model, args) -> list[dict]:
    """Write the maps (inverted onto the input grid) as NIfTI/PNG and the panels; records the files in the
    statistics ``rows``; returns the JSON entries of the files."""
    from monai_segcam.cam import normalize_cam

    affine = original.affine.numpy().astype(np.float64)
    if args.normalize:
        maps = {key: normalize_cam(torch.from_numpy(cam)[None])[0].numpy() for key, cam in maps.items()}
    maps = {key: cam.astype(np.float32) for key, cam in maps.items()}
    rows = {(row["layer"], row["method"], row["class"]): row for row in rows}
    entries = []
    for method in dict.fromkeys(method for _, method in maps):
        shown = {layer: cam for (layer, m), cam in maps.items() if m == method}
        files = writer.write(name, method, shown, classes, affine, original[0], masks, class_names=model.class_names)
        for (layer, c), paths in files.items():
            row = rows[(layer, method, c)]
            row["files"] = ";".join(os.path.join(name, os.path.basename(path)) for path in paths)
            stats = {key: row[key] if row[key] == row[key] else None for key in STAT_COLUMNS}  # NaN: none
            stats.update(_peak(shown[layer][classes.index(c)], affine))
            entries += [_entry(path, c, layer, method, stats, model, args) for path in paths]
    if args.png and len(maps) > 1:
        for path, c in zip(writer.write_panels(name, original[0], maps, classes, masks), classes):
            entries.append({"file": os.path.basename(path), "kind": "png", "class": c, "layer": None, "method": None})
    return entries


def _entry(path: str, c: int, layer: str, method: str, stats: dict, model: LoadedModel, args: Namespace) -> dict:
    """The JSON summary's entry of one written CAM file (a NIfTI map with its statistics, or a PNG)."""
    entry: dict[str, Any] = {"file": os.path.basename(path), "kind": "png" if path.endswith(".png") else "cam"}
    entry.update({"class": c, "layer": layer, "method": method})
    if entry["kind"] == "cam":
        entry.update(class_name=model.class_names.get(c), stats=stats, normalized=args.normalize)
    return entry


def _peak(cam: np.ndarray, affine: np.ndarray) -> dict[str, list]:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    world = affine @ np.array([*peak, 1.0])
    return {"peak_voxel": [int(i) for i in peak], "peak_world_ras_mm": [round(float(v), 4) for v in world[:3]]}


def _settings(args: Namespace, engine: Any, device: torch.device) -> dict[str, Any]:
    return {
        "layers": {layer.key: layer.module_name for layer in engine.layers},
        "methods": list(args.method),
        "region": args.region,
        "target": args.target,
        "roi_size": [int(r) for r in np.atleast_1d(engine.roi_size)],
        "overlap": engine.overlap,
        "sw_batch_size": engine.sw_batch_size,
        "mode": str(engine.mode),
        "device": str(device),
        "normalize": args.normalize,
        "png": args.png,
        "perturbation": {
            "mask_size": args.mask_size, "stride": args.mask_stride, "baseline": args.baseline, "steps": args.steps,
        } if OCCLUSION in args.method or args.channel_table else None,
    }  # fmt: skip


def run_explain(args: Namespace) -> int:
    """Run ``monai-segcam explain``; returns the exit status (1 when a case failed)."""
    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    labels: Sequence[str | None] = args.label if args.label is not None else [None] * len(args.images)
    if args.label is None and parse_region(args.region)[0] in _LABEL_REGIONS:
        raise CLIError(f"--region {args.region} needs the ground truth: give --label FILE")
    if len(labels) != len(args.images):
        raise CLIError(f"--label got {len(labels)} file(s) for {len(args.images)} image(s): give one label per image")
    check_exists(args.images, "image")
    check_exists([p for p in labels if p is not None], "label")
    device = resolve_device(args.device)
    model = load_model(args, checkpoint_required=True)
    model.network.to(device)
    predictor, engines, channels = _engines(model, args, device)
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise CLIError(f"--output {args.output} exists and is not a folder")
    os.makedirs(output, exist_ok=True)
    settings = _settings(args, predictor, device)
    namer = CaseNamer()  # the handlers' names: one input, one name by every front door
    names = [namer(path) for path in args.images]
    cases = list(zip(args.images, labels, names))
    if has_tqdm and not args.quiet and len(cases) > 1:
        cases = tqdm(cases, desc="cases", unit="case")
    failed, rows = 0, []
    for path, label_path, name in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                built = (predictor, engines, channels)
                summary, found = _explain_case(path, label_path, name, model, built, args, output, settings)
                rows += found
            except Exception as exc:  # one failed case leaves nothing behind, is recorded and does not stop the others
                if len(args.images) == 1 or args.debug or not isinstance(exc, (CLIError, RuntimeError, ValueError)):
                    raise
                failed += 1
                reason = (str(exc) if isinstance(exc, CLIError) else f"{path}: {type(exc).__name__}: {exc}").strip()
                for method, layer in ((m, layer) for m in engines for layer in predictor.layers):
                    rows += table_rows(name, method, layer.key, args.classes or [""], status="failed", error=reason)
                _print(f"monai-segcam: error: {reason.splitlines()[0]}", error=True)
                continue
        if not args.quiet:
            for message in dict.fromkeys(str(w.message) for w in caught if args.debug or "monai_segcam" in w.filename):
                _print(f"warning: {name}: {message}", error=True)
            _print(f"{name}: {len(summary['files']) + 1} files in {os.path.join(output, name)}")
    write_table(os.path.join(output, "segcam_stats.csv"), merge_rows(rows))
    if getattr(args, "report", False):
        from monai_segcam.report.explain_output import report_from_explain_output

        reported = [n for n in names if os.path.isfile(os.path.join(output, n, f"{n}_segcam.json"))]
        index = report_from_explain_output(output, reported)
        if not args.quiet:
            _print(f"review report: {index}")
    if failed:
        _print(f"monai-segcam: error: {failed} of {len(args.images)} case(s) failed", error=True)
    return 1 if failed else 0


def _print(message: str, error: bool = False) -> None:
    """Print without breaking tqdm progress bars."""
    import sys

    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    stream = sys.stderr if error else sys.stdout
    if has_tqdm:
        tqdm.write(message, file=stream)
    else:
        print(message, file=stream)
