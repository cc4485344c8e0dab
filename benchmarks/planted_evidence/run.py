# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Planted-evidence benchmark: every CAM method x layer on held-out volumes whose true evidence is known.

Tasks (see :py:mod:`monai_segcam.data.planted`) and what is measured, per held-out case, method and layer:

- ``marker``: class-2 cases (a marker cube next to the structure and a distractor cube far away) that the network
  classifies correctly; the map of class 2 over its predicted region. Relevance mass (share of the map's positive
  energy) on the marker zone (marker dilated by 2 voxels, minus the structure), on structure + marker zone and on the
  distractor zone; pointing game on the marker (2 voxels tolerance).
- ``two_objects``: the map of class 1 over ``Component(index=0)`` (the larger predicted object). Relevance mass on
  the explained object and on the other one (each dilated by 2 voxels); separation = ``d_own / (d_own + d_other)``
  with ``d`` the relevance mass per voxel of each zone (0.5: both objects equally dense, 1: only the explained one);
  top-k IoU with the explained object (k = its size).
- both: deletion and insertion AUC of the region score (``region_score_fn``, blur baseline, curves normalised by the
  unperturbed score; deletion lower is better, insertion higher) and the final-step Spearman rank correlation of
  the cascading model-parameter randomisation (4 groups, head to input, fixed region; on the first
  ``--randomize-cases`` cases), flagged when above 0.5 (the map survives randomisation).

A ``random`` row (uniform noise maps) gives the chance level of every metric. Scores are mean ± std over cases.

Perturbation baselines (layer ``input``, in their own table between the ``planted-perturbation`` markers):
``occlusion`` (:py:class:`~monai_segcam.perturbation.SegOcclusion`, 8³ occluders every 4 voxels set to 0, the
background value; positive drops), and the gradient maps of
:py:class:`~monai_segcam.perturbation.ChannelAttribution` of the one input channel: ``input_x_gradient`` and
``integrated_gradients`` (16 steps from the zero image), signed. Each gets the same metrics on the same region.
``--perturbation-only`` runs just these rows (and ``random``) and rewrites just their table.

Option variants (``--variants``, their own table between the ``planted-variants`` markers): Score-CAM with the
region's mean and summed score (``scorecam[mean]``, ``scorecam[sum]``) and Grad-CAM++ on the activations and on
``ReLU(A)`` (``gradcampp``, ``gradcampp_relu``), see :py:data:`VARIANTS`.

Run: ``python benchmarks/planted_evidence/run.py`` (about 4 minutes on 2 cores, one process per task). It prints
the results and writes them between the ``planted-evidence`` markers of ``docs/planted_evidence.md`` (the prose
around them is kept) and the panels ``docs/figures/planted_<task>.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HELD_OUT_SEED, SHAPE, load_network
from train import evaluate

from monai_segcam import Component, SegCAM, normalize_cam
from monai_segcam.cam.regions import region_cotangent, region_weights
from monai_segcam.data.planted import PLANTED_TASKS, make_planted_case
from monai_segcam.metrics import (
    auc,
    cascading_randomization,
    perturbation_curve,
    pointing_game,
    region_score_fn,
    relevance_mass,
    topk_iou,
)
from monai_segcam.perturbation import ChannelAttribution, SegOcclusion

__all__ = ["METHODS", "VARIANTS", "PERTURBATION", "LAYERS", "METRICS", "select_cases", "run_task", "format_table", "write_doc"]

METHODS = ("gradcam", "hirescam", "xrescam", "gradcampp", "xgradcam", "layercam", "eigencam", "scorecam")
# the options compared in their own table (--variants): Score-CAM's score reduction, Grad-CAM++ on A or on ReLU(A)
VARIANTS = {
    "scorecam[mean]": ("scorecam", {"score_reduction": "mean"}),
    "scorecam[sum]": ("scorecam", {"score_reduction": "sum"}),
    "gradcampp": ("gradcampp", {}),
    "gradcampp_relu": ("gradcampp_relu", {}),
}
PERTURBATION = ("occlusion", "input_x_gradient", "integrated_gradients")  # maps on the input: layer "input"
OCCLUSION = {"mask_size": 8, "stride": 4, "baseline": 0.0, "batch_size": 16}
IG_STEPS = 16
LAYERS = ("encoder.0", "encoder.1", "encoder.2", "bottleneck", "decoder.0", "decoder.1", "pre_head")
RANDOM = "random"
METRICS = {
    "marker": ("mass marker", "mass marker+struct", "mass distractor", "PG marker", "deletion", "insertion"),
    "two_objects": ("mass own", "mass other", "separation", "top-k IoU", "deletion", "insertion"),
}
RANDOMIZATION = "rand. Spearman"
# cascade groups of the benchmark's UNet, head first (the module names of UNet(3, 1, K, (8, 16, 32, 64), (2, 2, 2)))
CASCADE = (
    ("model.2",),
    ("model.1.submodule.2", "model.1.submodule.1.submodule.2"),
    ("model.1.submodule.1.submodule.1",),
    ("model.0", "model.1.submodule.0", "model.1.submodule.1.submodule.0"),
)
SURVIVES = 0.5
ZONE = 2  # dilation (voxels) of the evidence masks: the CAMs come from grids 2x to 8x coarser than the image
BEGIN, END = "<!-- planted-evidence:begin -->", "<!-- planted-evidence:end -->"
PERTURBATION_MARKERS = ("<!-- planted-perturbation:begin -->", "<!-- planted-perturbation:end -->")
VARIANT_MARKERS = ("<!-- planted-variants:begin -->", "<!-- planted-variants:end -->")
DOC = os.path.join("docs", "planted_evidence.md")


def _zone(mask: np.ndarray, exclude: np.ndarray | None = None) -> torch.Tensor:
    """``mask`` (1, *S) dilated by ``ZONE`` voxels (cube), minus ``exclude``, as a (1, 1, *S) bool tensor."""
    zone = ndimage.binary_dilation(mask[0], np.ones((3, 3, 3), bool), iterations=ZONE)
    if exclude is not None:
        zone &= ~exclude[0]
    return torch.from_numpy(zone)[None, None]


def select_cases(task: str, net: torch.nn.Module, num: int, shape: Sequence[int] = SHAPE) -> tuple[list[dict], dict]:
    """The first ``num`` held-out cases (seeds from ``HELD_OUT_SEED``) usable for ``task``, and the selection counts.

    ``marker``: class 2 with a distractor present, classified as class 2 (majority of the structure's voxels
    predicted foreground). ``two_objects``: ``Component(index=0)`` of the prediction covers mostly the larger object.

    Example:

    .. code-block:: python

        cases, counts = select_cases("marker", load_network("marker"), num=4)
    """
    cases, counts, seed = [], {"scanned": 0, "eligible": 0}, HELD_OUT_SEED
    while len(cases) < num:
        case = make_planted_case(task, shape, seed)
        case["seed"], seed = seed, seed + 1
        counts["scanned"] += 1
        if task == "marker" and not (case["class"] == 2 and case["distractor"].any()):
            continue
        counts["eligible"] += 1
        x = torch.from_numpy(case["image"])[None]
        with torch.no_grad():
            logits = net(x)
        if task == "marker":
            votes = torch.bincount(logits.argmax(1)[0][torch.from_numpy(case["structure"][0])], minlength=3)[1:]
            if int(votes.argmax()) + 1 != 2:
                continue
        else:
            region = region_weights(Component(0), logits, [1], shape, 1, warn_empty=False)[0, 0] > 0
            own = torch.from_numpy(case["objects"][0])
            if not region.any() or (region & own).sum() < 0.5 * region.sum():
                continue
        case["logits"] = logits
        cases.append(case)
    counts["used"] = len(cases)
    return cases, counts


def _evidence(task: str, case: dict) -> dict[str, torch.Tensor]:
    if task == "marker":
        marker = _zone(case["marker"], exclude=case["structure"])
        return {
            "marker": marker,
            "marker+struct": marker | torch.from_numpy(case["structure"])[None],
            "distractor": _zone(case["distractor"]),
            "marker_exact": torch.from_numpy(case["marker"])[None],
        }
    objects = case["objects"]
    return {
        "own": _zone(objects[:1], exclude=objects[1:]),
        "other": _zone(objects[1:], exclude=objects[:1]),
        "own_exact": torch.from_numpy(objects[:1])[None],
    }


def _localisation(task: str, cam: torch.Tensor, ev: dict[str, torch.Tensor]) -> dict[str, float]:
    cam = cam.as_tensor() if hasattr(cam, "as_tensor") else cam
    if task == "marker":
        return {
            "mass marker": float(relevance_mass(cam, ev["marker"])),
            "mass marker+struct": float(relevance_mass(cam, ev["marker+struct"])),
            "mass distractor": float(relevance_mass(cam, ev["distractor"])),
            "PG marker": float(pointing_game(cam, ev["marker_exact"], tolerance=ZONE)),
        }
    own, other = float(relevance_mass(cam, ev["own"])), float(relevance_mass(cam, ev["other"]))
    d_own, d_other = own / int(ev["own"].sum()), other / int(ev["other"].sum())
    return {
        "mass own": own,
        "mass other": other,
        "separation": d_own / (d_own + d_other) if d_own + d_other > 0 else math.nan,
        "top-k IoU": float(topk_iou(cam, ev["own_exact"], k="mask")),
    }


def _curves(score_fn, x: torch.Tensor, cam: torch.Tensor, steps: int) -> dict[str, float]:
    out = {}
    for mode in ("deletion", "insertion"):
        try:
            fractions, scores = perturbation_curve(
                score_fn, x, cam.reshape(x.shape[2:]), mode=mode, steps=steps, batch_size=steps + 1, normalize=True
            )
            out[mode] = float(auc(scores, fractions))
        except ValueError:  # zero region score: the curve cannot be normalised
            out[mode] = math.nan
    return out


def run_task(
    task: str,
    num: int = 5,
    methods: Sequence[str] = METHODS,
    layers: Sequence[str] = LAYERS,
    steps: int = 10,
    randomize_cases: int = 2,
    shape: Sequence[int] = SHAPE,
    perturbation: Sequence[str] = (),
) -> tuple[list[dict], dict, dict]:
    """Run the benchmark of ``task``: one row per (case, method, layer) plus the ``random`` rows, and one per (case,
    perturbation method) with layer ``"input"``.

    Returns:
        ``(rows, info, figure)``: rows are dicts with ``case``, ``method``, ``layer``, ``zero`` (the map is all zero)
        and one entry per metric; ``info`` holds the case selection counts and the network's quality on 32 held-out
        volumes; ``figure`` the first case's image, evidence mask and maps ``{layer: {method: map}}``.

    Example:

    .. code-block:: python

        rows, info, figure = run_task("marker", num=1, methods=["hirescam"], layers=["bottleneck"], steps=4)
    """
    torch.manual_seed(0)
    net = load_network(task)
    cases, counts = select_cases(task, net, num, shape)
    info = {"selection": counts, "quality": evaluate(task, net)}
    cls, rows = (2 if task == "marker" else 1), []
    figure: dict = {}
    for index, case in enumerate(cases):
        x, logits = torch.from_numpy(case["image"])[None], case["logits"]
        region = "pred" if task == "marker" else Component(0)
        weights = region_weights(region, logits, [cls], shape, 1, warn_empty=False)
        score_fn = region_score_fn(net, region_cotangent(logits, weights, cls))
        ev = _evidence(task, case)
        noise = torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(case["seed"]))
        rows.append({"case": index, "method": RANDOM, "layer": "-", "zero": False, **_localisation(task, noise, ev),
                     **_curves(score_fn, x, noise, steps)})
        if index == 0:
            figure = {"image": case["image"][0], "region": _figure_region(task, case), "view": _view(task, case),
                      "cams": {}}
        for method in methods:
            name, options = VARIANTS.get(method, (method, {}))
            cams = SegCAM(net, layers=list(layers), method=name, **options)(x, classes=cls, region=weights)
            for layer in layers:
                cam = cams[layer].as_tensor()
                row = {"case": index, "method": method, "layer": layer, "zero": not bool(cam.any())}
                row.update(_localisation(task, cam, ev))
                row.update(_curves(score_fn, x, cam, steps))
                if index < randomize_cases:
                    row[RANDOMIZATION] = _randomization(net, x, weights, cls, method, layer)
                rows.append(row)
                if index == 0:
                    figure["cams"].setdefault(layer, {})[method] = normalize_cam(cam)[0, 0].numpy()
        for method in perturbation:
            cam = perturbation_map(method, net, x, weights, cls)
            row = {"case": index, "method": method, "layer": "input", "zero": not bool(cam.any())}
            row.update(_localisation(task, cam, ev))
            row.update(_curves(score_fn, x, cam, steps))
            if index < randomize_cases:
                def map_fn(network, method=method, x=x, weights=weights):
                    return perturbation_map(method, network, x, weights, cls)

                row[RANDOMIZATION] = cascading_randomization(map_fn, net, layers=CASCADE, seed=0)[-1].spearman
            rows.append(row)
    return rows, info, figure


def perturbation_map(method: str, net, x: torch.Tensor, weights: torch.Tensor, cls: int) -> torch.Tensor:
    """The ``(1, 1, *S)`` map of a perturbation method (see :py:data:`PERTURBATION`) for the region ``weights``."""
    if method == "occlusion":
        return SegOcclusion(net, **OCCLUSION)(x, classes=cls, region=weights).map.as_tensor()
    attribution = ChannelAttribution(net, methods=method, steps=IG_STEPS, baseline=0.0)
    return attribution(x, classes=cls, region=weights).maps[method][:, :, 0]


def _randomization(net, x, weights, cls, method, layer) -> float:
    name, options = VARIANTS.get(method, (method, {}))

    def cam_fn(network):
        return SegCAM(network, layers=layer, method=name, **options)(x, classes=cls, region=weights).map.as_tensor()

    return cascading_randomization(cam_fn, net, layers=CASCADE, seed=0)[-1].spearman


def _figure_region(task: str, case: dict) -> np.ndarray:
    if task == "marker":
        return (case["structure"][0] | case["marker"][0] | case["distractor"][0]).astype(np.uint8)
    return (case["objects"][0] | case["objects"][1]).astype(np.uint8)


def _stat(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def format_table(task: str, rows: list[dict]) -> str:
    """Markdown table (method x layer rows, metric columns, mean ± std over cases) of one task's rows.

    The last column counts the cases whose map is all zero (ReLU removed every voxel); a ``⚠`` marks a mean
    randomisation Spearman above 0.5.

    Example:

    .. code-block:: python

        print(format_table("marker", rows))
    """
    metrics = [*list(METRICS[task]), RANDOMIZATION]
    keys = list(dict.fromkeys((row["method"], row["layer"]) for row in rows))
    lines = ["| method | layer | " + " | ".join(metrics) + " | zero maps |", "|---|---|" + "---|" * (len(metrics) + 1)]
    for method, layer in keys:
        group = [row for row in rows if (row["method"], row["layer"]) == (method, layer)]
        cells = []
        for metric in metrics:
            cell = _stat([row[metric] for row in group if metric in row])
            spearman = [row.get(metric, math.nan) for row in group] if metric == RANDOMIZATION else []
            spearman = [v for v in spearman if not math.isnan(v)]
            if spearman and np.mean(spearman) > SURVIVES:
                cell += " ⚠"
            cells.append(cell)
        zeros = f"{sum(row['zero'] for row in group)}/{len(group)}"
        lines.append(f"| {method} | {layer} | " + " | ".join(cells) + f" | {zeros} |")
    return "\n".join(lines)


def _winners(task: str, rows: list[dict]) -> list[str]:
    """Best (method, layer) per metric by mean; deletion is lower-is-better, ``mass other``/distractor too."""
    lower = {"deletion", "mass other", "mass distractor", RANDOMIZATION}
    out = []
    for metric in [*list(METRICS[task]), RANDOMIZATION]:
        means = {}
        for row in rows:
            if metric in row and row["method"] != RANDOM and not math.isnan(row[metric]):
                means.setdefault((row["method"], row["layer"]), []).append(row[metric])
        if not means:
            continue
        ranked = sorted(means, key=lambda k: np.mean(means[k]), reverse=metric not in lower)
        top = ", ".join(f"{m}/{layer} {np.mean(means[(m, layer)]):.3f}" for m, layer in ranked[:3])
        out.append(f"- {metric} ({'lower' if metric in lower else 'higher'} is better): {top}")
    return out


def report(task: str, rows: list[dict], info: dict) -> str:
    """The Markdown section of one task: network quality, case selection, best three per metric, full table."""
    quality = ", ".join(f"{k} {v:.3f}" for k, v in info["quality"].items())
    sel = info["selection"]
    n_rand = len({row["case"] for row in rows if RANDOMIZATION in row})
    return "\n".join(
        [
            f"### Task `{task}`",
            "",
            f"Network on 32 held-out volumes: {quality}. Cases: {sel['used']} used of {sel['eligible']} eligible "
            f"({sel['scanned']} seeds scanned); randomisation on the first {n_rand}.",
            "",
            "Best three (method/layer, mean over cases):",
            "",
            *_winners(task, rows),
            "",
            format_table(task, rows),
            "",
        ]
    )


def write_doc(section: str, path: str = DOC, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Put ``section`` between the ``markers`` (default: ``planted-evidence``) of ``path`` (created with them if
    missing).

    Example:

    .. code-block:: python

        write_doc("### results", "docs/planted_evidence.md")
    """
    begin, end = markers
    text = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else f"# Planted evidence\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        raise ValueError(f"{path} has no {begin} ... {end} markers.")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n{section}\n{end}{tail}")


def _view(task: str, case: dict) -> tuple[str, int]:
    """The slice of the panel: the one showing most of both the structure and the marker (or both objects)."""
    first, second = (case["structure"][0], case["marker"][0]) if task == "marker" else case["objects"]
    best = ("axial", int(np.argwhere(first)[:, 2].mean()), 0)
    for axis, dim in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
        other = tuple(d for d in range(3) if d != dim)
        shared = np.minimum(first.sum(other), second.sum(other))
        if shared.max() > best[2]:
            best = (axis, int(shared.argmax()), int(shared.max()))
    return best[0], best[1]


def save_panel(task: str, figure: dict, path: str) -> None:
    """The information-flow panel of the first case: rows = layers (encoder to decoder), columns = methods, each map
    min-max normalised (one shared colour scale), evidence contours in white."""
    from monai_segcam.visualize import plot_cam_panel, save_figure

    title = {"marker": "marker task: class 2 over its predicted region", "two_objects": "two objects: Component(0)"}
    axis, index = figure["view"]
    fig = plot_cam_panel(
        figure["image"], figure["cams"], region=figure["region"], axis=axis, slice_index=index, title=title[task],
        scale="shared", cell_size=1.6, colorbar=False,
    )
    save_figure(fig, path)


def _run_one(args: tuple) -> tuple[str, list[dict], dict, dict, float]:
    task, kwargs = args
    torch.set_num_threads(1)  # one process per task: 2 threads per process on 2 cores run ~10x slower
    warnings.simplefilter("ignore")  # zero maps and constant correlations are counted in the table instead
    start = time.perf_counter()
    rows, info, figure = run_task(task, **kwargs)
    return task, rows, info, figure, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=5, help="held-out cases per task")
    parser.add_argument("--steps", type=int, default=10, help="perturbation curve steps")
    parser.add_argument("--randomize-cases", type=int, default=2, help="cases with the randomisation check")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--tasks", nargs="+", default=list(PLANTED_TASKS), choices=PLANTED_TASKS)
    parser.add_argument("--perturbation", nargs="*", default=list(PERTURBATION), choices=PERTURBATION,
                        help="perturbation rows (none: skip them)")  # fmt: skip
    parser.add_argument("--perturbation-only", action="store_true",
                        help="run only the perturbation rows (and random); rewrite only their table")  # fmt: skip
    parser.add_argument("--variants", action="store_true",
                        help="run only the option variants (VARIANTS: Score-CAM's score reduction, Grad-CAM++ on A or "
                             "ReLU(A)) and random; rewrite only their table")  # fmt: skip
    parser.add_argument("--doc", default=DOC, help="Markdown file with the planted-evidence markers ('' to skip)")
    parser.add_argument("--figures", default=os.path.join("docs", "figures"), help="figure folder ('' to skip)")
    args = parser.parse_args()
    methods = [] if args.perturbation_only else list(VARIANTS) if args.variants else args.methods
    if args.variants:
        args.perturbation = []
    kwargs = {"num": args.num, "steps": args.steps, "randomize_cases": args.randomize_cases, "methods": methods,
              "layers": args.layers, "perturbation": args.perturbation}
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(args.tasks)) as pool:
        results = list(pool.map(_run_one, [(task, kwargs) for task in args.tasks]))
    cam_sections, perturbation_sections = [], []
    for task, rows, info, figure, _ in results:
        cam_rows = [row for row in rows if row["method"] not in PERTURBATION]
        perturbation_rows = [row for row in rows if row["method"] in PERTURBATION or row["method"] == RANDOM]
        if methods:
            cam_sections.append(report(task, cam_rows, info))
        if args.perturbation:
            perturbation_sections.append(report(task, perturbation_rows, info))
        if args.figures and methods and not args.variants:
            os.makedirs(args.figures, exist_ok=True)
            save_panel(task, figure, os.path.join(args.figures, f"planted_{task}.png"))
    command = "python benchmarks/planted_evidence/run.py " + " ".join(sys.argv[1:])
    header = (
        f"Generated by `{command.strip()}` ({args.num} cases per task, {args.steps}-step curves, "
        f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s wall).\n"
    )
    cam_markers = VARIANT_MARKERS if args.variants else (BEGIN, END)
    for sections, markers in ((cam_sections, cam_markers), (perturbation_sections, PERTURBATION_MARKERS)):
        if not sections:
            continue
        section = header + "\n" + "\n".join(sections)
        print(section)
        if args.doc:
            write_doc(section, args.doc, markers)

if __name__ == "__main__":
    main()
