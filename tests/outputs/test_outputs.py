# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The output layer's pieces: names and keys, stale temporary files, the statistics (closed forms), the table and
its journal."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_segcam.metrics import cam_statistics, label_masks
from monai_segcam.outputs import (
    StatsTable,
    cam_file_name,
    cam_keys,
    cam_output_keys,
    merge_rows,
    read_table,
    remove_stale_temporaries,
    table_rows,
)
from monai_segcam.outputs.files import _HOST


def test_names_and_keys():
    assert cam_file_name("case 1", "hirescam", "encoder.0", 2) == "case 1_cam_hirescam_encoder.0_class2.nii.gz"
    assert cam_file_name("c", "gradcam", "swinViT[4]", 1, ".png") == "c_cam_gradcam_swinViT_4_class1.png"
    assert cam_output_keys("cam", "pre_head") == {"pre_head": "cam"}
    keys = {"bottleneck": "cam_bottleneck", "pre_head": "cam_pre_head"}
    assert cam_output_keys("cam", ["bottleneck", "pre_head"]) == keys
    assert cam_keys("cam_fp", ("pre_head",)) == ["cam_fp_pre_head"]


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp_{_HOST}_{int(dead.stdout)}_abc.nii.gz"
    live = tmp_path / f".tmp_{_HOST}_{os.getpid()}_def.nii.gz"
    other_host = tmp_path / f".tmp_elsewhere_{int(dead.stdout)}_ghi.nii.gz"
    for path in (stale, live, other_host, tmp_path / "case_cam.nii.gz"):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, "case_cam.nii.gz"])
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_cam_statistics_closed_form():
    cam = torch.tensor([[[-1.0, 2.0], [3.0, 0.0]]])  # one class, 2 x 2 voxels
    region = torch.tensor([[[True, True], [False, False]]])
    label = torch.tensor([[[False, False], [True, False]]])
    (row,) = cam_statistics(MetaTensor(cam), region, label)
    assert row["max"] == 3.0 and row["mean"] == 1.0 and row["std"] == pytest.approx(math.sqrt(2.5))
    assert row["region_voxels"] == 2 and row["relevance_mass_region"] == pytest.approx(2 / 5)  # ReLU: -1 does not count
    assert row["relevance_mass_label"] == pytest.approx(3 / 5) and row["pointing_game_label"] == 1.0
    (bare,) = cam_statistics(cam)
    assert all(math.isnan(bare[key]) for key in ("region_voxels", "relevance_mass_region", "relevance_mass_label"))


def test_label_masks_use_or_explain():
    image = MetaTensor(torch.zeros(1, 4, 4, 2))
    label = torch.tensor([0, 1, 2, 1] * 8, dtype=torch.float32).view(1, 4, 4, 2)
    masks, reason = label_masks(label, [1, 2], image)
    assert reason == "" and masks.shape == (2, 4, 4, 2) and torch.equal(masks[0], label[0] == 1)
    onehot = torch.cat([label == c for c in range(3)]).float()
    assert torch.equal(label_masks(onehot, [1, 2], image)[0], masks)
    shifted = MetaTensor(label, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    for bad, words in ((None, "no label"), ("x.nii.gz", "not an image"), (label[0], "not channel first"),
                       (label[:, :3], "another grid"), (shifted, "affine differs"), (label * 0.5, "non-integer"),
                       (onehot[:2], "do not all fit")):  # fmt: skip
        masks, reason = label_masks(bad, [1, 2], image)
        assert masks is None and words in reason, (words, reason)


def test_table_merge_journal_and_csv(tmp_path):
    stats = [{"max": 1.0, "mean": 0.5, "std": 0.1, "region_voxels": 3, "relevance_mass_region": 0.9,
              "relevance_mass_label": math.nan, "pointing_game_label": math.nan}]  # fmt: skip
    ok = table_rows("a", "hirescam", "pre_head", [1], stats, epoch=1, files={("pre_head", 1): ["a.nii.gz"]})
    again = table_rows("a", "hirescam", "pre_head", [1], stats, status="failed", error="late duplicate")
    resumed = table_rows("b", "hirescam", "pre_head", [1], status="resumed")
    table = StatsTable(tmp_path, "stats.csv")
    table.append(table_rows("b", "hirescam", "pre_head", [1], stats), epoch=1, rank=1)
    with open(table.journal(1, 1), "a") as stream:
        stream.write('{"case": "c", "layer": "pre_he')  # a line cut short by a kill
    previous = table.recorded(epoch=1)
    assert list(previous) == [("b", "pre_head", "hirescam", "1")]
    rows = merge_rows(ok + again + resumed, previous)
    assert [(r["case"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok")]
    table.write(rows, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.csv"]  # the journal removed
    table = read_table(tmp_path / "stats.csv")
    assert table[("a", "pre_head", "hirescam", "1")]["files"] == "a.nii.gz"
    assert table[("a", "pre_head", "hirescam", "1")]["relevance_mass_label"] == ""  # missing values left empty
    text = (tmp_path / "stats.csv").read_text().splitlines()
    assert len(text) == 1 + 2 + 2 and text[-2].startswith("mean,") and ",2" in text[-2][-3:]  # n = 2
    assert np.isclose(float(text[-2].split(",")[7]), 1.0)
