# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMReportHandler on a real SupervisedEvaluator with SegCAMHandler: the report holds the explained cases with
the handler's statistics and Dice of the (inverted) prediction against the label; one report per epoch; batch-first
outputs without decollation."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import (
    AsDiscreted,
    Compose,
    Invertd,
)
from test_segcam_handler import make_net, preprocessing

from monai_segcam.handlers import SegCAMHandler, SegCAMReportHandler

Events = pytest.importorskip("ignite.engine").Events
AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 0, 1.0, -8.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])
SHAPE = (16, 14, 12)


def write_cases(folder, n: int = 2) -> list[dict[str, str]]:
    rng = np.random.default_rng(3)
    files = []
    for i in range(n):
        image = rng.normal(0, 0.1, SHAPE).astype(np.float32)
        label = np.zeros(SHAPE, np.uint8)
        label[3 + i : 9 + i, 4:10, 3:8] = 1
        image[label > 0] += 1.0
        paths = {"image": os.path.join(folder, f"case_{i}.nii.gz"), "label": os.path.join(folder, f"label_{i}.nii.gz")}
        nib.save(nib.Nifti1Image(image, AFFINE), paths["image"])
        nib.save(nib.Nifti1Image(label, AFFINE), paths["label"])
        files.append(paths)
    return files


def evaluator(files, handlers, batch_size: int = 1, decollate: bool = True) -> SupervisedEvaluator:
    pre = preprocessing()
    post = None
    if decollate:
        post = Compose([
            Invertd(["pred", "label", "cam", "cam_bottleneck", "cam_pre_head"], pre, orig_keys="image",
                    nearest_interp=[False, True, False, False, False], allow_missing_keys=True),
            AsDiscreted("pred", argmax=True),
        ])  # fmt: skip
    loader = DataLoader(Dataset(files, pre), batch_size=batch_size, num_workers=0)
    return SupervisedEvaluator(
        torch.device("cpu"), loader, make_net(), postprocessing=post, val_handlers=handlers, decollate=decollate
    )


def read_index(folder) -> dict:
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
        return json.load(stream)


def test_report_of_evaluated_cases_with_handler_rows_and_dice(tmp_path):
    files = write_cases(tmp_path)
    cams = SegCAMHandler(layers=["bottleneck", "pre_head"], classes=[1], output_dir=tmp_path / "cams")
    engine = evaluator(files, [cams, SegCAMReportHandler(tmp_path / "report", cams)])
    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))  # after both
    engine.run()
    index = read_index(tmp_path / "report")
    assert [case["name"] for case in index["cases"]] == ["case_0", "case_1"]
    with open(tmp_path / "cams" / "segcam_stats.csv", newline="") as stream:
        rows = {(r["case"], r["layer"]): r for r in csv.DictReader(stream) if r["status"] == "ok"}
    for case, output in zip(index["cases"], outputs):
        assert {(m["layer"], m["method"], m["class"]) for m in case["maps"]} == {
            ("bottleneck", "hirescam", 1), ("pre_head", "hirescam", 1)}  # fmt: skip
        for entry in case["maps"]:
            row = rows[(case["name"], entry["layer"])]
            assert entry["stats_from"] == "rows" and entry["max"] == pytest.approx(float(row["max"]), rel=1e-6)
            expected = float(row["relevance_mass_region"])
            assert entry["relevance_mass_region"] == (None if np.isnan(expected) else pytest.approx(expected))
            assert entry["flagged"] == (not np.isnan(expected) and expected < 0.5)
        pred, label = output["pred"][0].numpy() == 1, output["label"][0].numpy() == 1  # both on the original grid
        expected_dice = 2 * (pred & label).sum() / (pred.sum() + label.sum())
        assert case["dice"]["1"] == pytest.approx(expected_dice)
        assert all(os.path.isfile(tmp_path / "report" / case[key]) for key in ("page", "thumb"))


def test_one_report_per_epoch(tmp_path):
    files = write_cases(tmp_path, n=1)
    cams = SegCAMHandler(classes=1, output_dir=tmp_path / "cams", epoch_subdir=True)
    report = SegCAMReportHandler(tmp_path / "report", cams, epoch_subdir=True)
    engine = evaluator(files, [cams, report])
    for epoch in (1, 2):
        engine.run(global_epoch=epoch)
    for epoch in (1, 2):
        assert [c["name"] for c in read_index(tmp_path / "report" / f"epoch_{epoch:04d}")["cases"]] == ["case_0"]
    top = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'href="epoch_0001/index.html"' in top and 'href="epoch_0002/index.html"' in top and "1 cases" in top
    assert report.written == [str(tmp_path / "report" / f"epoch_{e:04d}" / "index.html") for e in (1, 2)]


def test_batch_first_output_without_a_segcam_handler(tmp_path):
    """Without decollation the output is a batch-first dict; the CAM keys are named by ``layers``."""
    files = write_cases(tmp_path)
    cams = SegCAMHandler(layers="pre_head", classes=[0, 1], cam_key="explained")
    report = SegCAMReportHandler(tmp_path / "report", layers="last", classes=[0, 1], cam_key="explained",
                                 method="hirescam", label_key=None)  # fmt: skip
    evaluator(files, [cams, report], batch_size=2, decollate=False).run()
    index = read_index(tmp_path / "report")
    assert [c["name"] for c in index["cases"]] == ["case_0", "case_1"]
    assert {(m["layer"], m["class"]) for m in index["cases"][0]["maps"]} == {("last", 0), ("last", 1)}
    assert all(case["dice"] == {} and not case["has_label"] for case in index["cases"])
    # without rows, the report computes relevance mass itself: the two classes of the argmax split the volume
    maps = index["cases"][0]["maps"]
    assert all(m.get("stats_from") is None and m["relevance_mass_region"] is not None for m in maps)
