# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Planted-evidence benchmark, families side by side: CAMs, input attributions and occlusion on the same held-out
cases, regions and networks as ``run.py``, scored on localisation, faithfulness, robustness, complexity and
randomisation (one metric per Quantus category).

Rows (family, method, layer):

- CAMs: HiResCAM at ``pre_head``, Seg-XRes-CAM at ``encoder.0`` and LayerCAM at ``decoder.1`` (the best CAM rows of
  ``run.py``'s tables);
- input attributions (``SegCAM(net, method=...)``, result key ``"input"``, signed): ``gradient``,
  ``input_x_gradient``, ``smoothgrad`` (``SMOOTHGRAD`` samples and noise level) and ``integrated_gradients``
  (``IG_STEPS`` Gauss-Legendre steps from the zero image);
- perturbation: ``occlusion`` (``run.OCCLUSION``: 8³ occluders every 4 voxels set to 0).

Metrics, per case (mean ± std over cases in the table):

- localisation (Quantus *Localisation*): ``run.py``'s relevance masses, pointing game, separation and top-k IoU;
- faithfulness: ``deletion`` (blur baseline, ``steps`` steps, normalised, lower is better) and ``ROAD`` (most
  relevant first, noisy linear imputation, removed shares 0 to 0.9, normalised AUC, lower is better;
  :py:func:`~monai_segcam.metrics.road_curve`);
- robustness: ``max-sens.`` (:py:func:`~monai_segcam.metrics.max_sensitivity`, ``MAX_SENS`` noisy copies of
  uniform noise of ±2 % of the image's range, region fixed; lower is better);
- complexity: ``Gini`` (:py:func:`~monai_segcam.metrics.sparseness`, higher is sparser) and ``entropy``
  (:py:func:`~monai_segcam.metrics.complexity`, nats, lower is simpler);
- randomisation: ``random logit`` (:py:func:`~monai_segcam.metrics.random_logit`: Pearson correlation of the signed map
  of the explained class with the map of another class drawn at random, same region; lower is class-sensitive).

Run: ``python benchmarks/planted_evidence/families.py --num 2`` (one process per task). It prints the tables and
writes them between the ``planted-families`` markers of ``docs/planted_evidence.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import NUM_CLASSES, SHAPE, load_network
from run import DOC, OCCLUSION, RANDOM, _curves, _evidence, _localisation, _stat, select_cases, write_doc

from monai_segcam import Component, SegCAM
from monai_segcam.cam.regions import region_cotangent, region_weights
from monai_segcam.data.planted import PLANTED_TASKS
from monai_segcam.metrics import auc, complexity, max_sensitivity, random_logit, region_score_fn, road_curve, sparseness
from monai_segcam.perturbation import SegOcclusion

__all__ = ["ROWS", "METRICS", "run_families", "families_table"]

CAMS = (("hirescam", "pre_head"), ("xrescam", "encoder.0"), ("layercam", "decoder.1"))
INPUTS = ("gradient", "input_x_gradient", "smoothgrad", "integrated_gradients")
ROWS = (*(("CAM", m, layer) for m, layer in CAMS), *(("input", m, "input") for m in INPUTS),
        ("perturbation", "occlusion", "input"))  # fmt: skip
SMOOTHGRAD = {"n_samples": 8, "noise_level": 0.1, "seed": 0}
IG_STEPS = 16
MAX_SENS = {"n_samples": 2, "radius": 0.02, "seed": 0}
ROAD_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SHARED = ("deletion", "ROAD", "max-sens.", "Gini", "entropy", "random logit")
METRICS = {
    "marker": ("mass marker", "mass distractor", "PG marker", *SHARED),
    "two_objects": ("mass own", "separation", "top-k IoU", *SHARED),
}
LOWER = {"mass distractor", "deletion", "ROAD", "max-sens.", "entropy", "random logit"}
MARKERS = ("<!-- planted-families:begin -->", "<!-- planted-families:end -->")


def explainer(method: str, layer: str, net):
    """``(image, class, region) -> (1, 1, *S)`` map of one row's method (see the module's list)."""
    if method == "occlusion":
        occlusion = SegOcclusion(net, **OCCLUSION)
        return lambda x, c, w: occlusion(x, classes=c, region=w).map.as_tensor()
    if method in INPUTS:
        options = {"smoothgrad": SMOOTHGRAD, "integrated_gradients": {"n_steps": IG_STEPS}}.get(method, {})
        engine = SegCAM(net, method=method, relu=False, **options)
        return lambda x, c, w: engine(x, classes=c, region=w)["input"].as_tensor()
    cam = SegCAM(net, layers=layer, method=method)
    return lambda x, c, w: cam(x, classes=c, region=w).map.as_tensor()


def _road(score_fn, x: torch.Tensor, cam: torch.Tensor) -> float:
    try:
        curve = road_curve(score_fn, x, cam, ROAD_FRACTIONS, order="morf", noise=0.01, seed=0, normalize=True)
    except ValueError:  # zero region score
        return math.nan
    return float(auc(curve.scores, curve.fractions) / (ROAD_FRACTIONS[-1] - ROAD_FRACTIONS[0]))


def run_families(task: str, num: int = 2, steps: int = 10, rows: tuple = ROWS) -> list[dict]:
    """One row per case and ``(family, method, layer)`` of ``rows``, and the ``random`` rows of ``task``.

    Example:

    .. code-block:: python

        out = run_families("marker", num=1, steps=2, rows=(("CAM", "hirescam", "pre_head"),))
    """
    torch.manual_seed(0)
    net = load_network(task)
    cases, _ = select_cases(task, net, num, SHAPE)
    cls, out = (2 if task == "marker" else 1), []
    others = list(range(NUM_CLASSES[task]))
    for index, case in enumerate(cases):
        x, logits = torch.from_numpy(case["image"])[None], case["logits"]
        weights = region_weights("pred" if task == "marker" else Component(0), logits, [cls], SHAPE, 1, warn_empty=False)
        score_fn = region_score_fn(net, region_cotangent(logits, weights, cls))
        ev = _evidence(task, case)
        noise = torch.rand((1, 1, *SHAPE), generator=torch.Generator().manual_seed(case["seed"]))
        out.append({"case": index, "family": "-", "method": RANDOM, "layer": "-", **_localisation(task, noise, ev),
                     "deletion": _curves(score_fn, x, noise, steps)["deletion"], "ROAD": _road(score_fn, x, noise),
                     "Gini": float(sparseness(noise)), "entropy": float(complexity(noise))})  # fmt: skip
        for family, method, layer in rows:
            row = {"case": index, "family": family, "method": method, "layer": layer}
            explain = explainer(method, layer, net)
            out.append({**row, **_scores(task, explain, x, weights, cls, others, score_fn, ev, steps, case["seed"])})
    return out


def _scores(task, explain, x, weights, cls, others, score_fn, ev, steps, seed) -> dict[str, float]:
    """Every metric of one method's map of one case."""
    cam = explain(x, cls, weights)
    row = {"zero": not bool(cam.any()), **_localisation(task, cam, ev)}
    row["deletion"] = _curves(score_fn, x, cam, steps)["deletion"]
    row["ROAD"] = _road(score_fn, x, cam)
    row["max-sens."] = float(max_sensitivity(lambda image: explain(image, cls, weights), x, **MAX_SENS))
    row["Gini"], row["entropy"] = float(sparseness(cam)), float(complexity(cam))
    check = random_logit(lambda c: explain(x, c, weights), cls, others, seed=seed, absolute=False)  # as Quantus
    row["random logit"] = check.similarity
    return row


def families_table(task: str, rows: list[dict]) -> str:
    """The Markdown table of one task: a row per (family, method, layer), mean ± std over cases; the best mean of
    each metric (among the explanation rows) in bold.

    Example:

    .. code-block:: python

        print(families_table("marker", run_families("marker", num=1, steps=2)))
    """
    metrics = METRICS[task]
    keys = list(dict.fromkeys((row["family"], row["method"], row["layer"]) for row in rows))
    means = {key: {m: np.nanmean([r.get(m, math.nan) for r in rows if (r["family"], r["method"], r["layer"]) == key])
                   for m in metrics} for key in keys}  # fmt: skip
    best = {}
    for m in metrics:
        values = {key: v[m] for key, v in means.items() if key[1] != RANDOM and not math.isnan(v[m])}
        if values:
            best[m] = (min if m in LOWER else max)(values, key=values.get)
    lines = ["| family | method | layer | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for key in keys:
        group = [r for r in rows if (r["family"], r["method"], r["layer"]) == key]
        cells = []
        for m in metrics:
            cell = _stat([r[m] for r in group if m in r])
            cells.append(f"**{cell}**" if best.get(m) == key else cell)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _one(args: tuple) -> tuple[str, list[dict]]:
    task, num, steps = args
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    return task, run_families(task, num, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2, help="held-out cases per task")
    parser.add_argument("--steps", type=int, default=10, help="deletion curve steps")
    parser.add_argument("--tasks", nargs="+", default=list(PLANTED_TASKS), choices=PLANTED_TASKS)
    parser.add_argument("--doc", default=DOC, help="Markdown file with the planted-families markers ('' to skip)")
    args = parser.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(args.tasks)) as pool:
        results = list(pool.map(_one, [(task, args.num, args.steps) for task in args.tasks]))
    command = "python benchmarks/planted_evidence/families.py " + " ".join(sys.argv[1:])
    parts = [f"Generated by `{command.strip()}` ({args.num} cases per task, torch {torch.__version__}, "
             f"{time.perf_counter() - start:.0f} s wall on a shared machine). Bold: the best mean per column.\n"]  # fmt: skip
    for task, rows in results:
        parts += [f"### Task `{task}`", "", families_table(task, rows), ""]
    section = "\n".join(parts)
    print(section)
    if args.doc:
        write_doc(section, args.doc, MARKERS)


if __name__ == "__main__":
    main()
