# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain IMAGE... --nnunet MODEL_FOLDER`` and ``monai-segcam layers --nnunet``."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is an optional dependency (pip install monai-segcam[nnunet])")

from monai_segcam.cli import main
from monai_segcam.nnunet import NNUNetModel, NNUNetSegCAM, explain_nnunet_case
from monai_segcam.outputs import CaseSummary, read_table

pytestmark = pytest.mark.slow  # the session fixture trains a tiny nnU-Net (about 30 s)


def load(path):
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def test_explain_two_folds_mirrored(nnunet_folder, nnunet_case, tmp_path, capsys):
    files = [str(nnunet_case["image0"]), str(nnunet_case["image1"])]
    out = tmp_path / "out"
    args = ["explain", *files, "--nnunet", str(nnunet_folder), "--folds", "0", "1", "--layers", "pre_head",
            "encoder.1", "--method", "hirescam", "gradcam", "--output", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    case = out / "case"
    engine = NNUNetSegCAM(NNUNetModel(nnunet_folder, folds=[0, 1]), layers=["pre_head", "encoder.1"])
    expected = engine(files)
    seg, affine = load(case / "case_seg.nii.gz")
    assert np.array_equal(seg, expected.segmentation)
    np.testing.assert_allclose(affine, expected.affine, atol=1e-4)
    cam, cam_affine = load(case / "case_cam_hirescam_encoder.1_class1.nii.gz")
    np.testing.assert_allclose(cam, expected.maps["encoder.1"][0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cam_affine, affine)
    summary = json.loads((case / "case_segcam.json").read_text())
    assert summary["settings"]["folds"] == ["0", "1"] and summary["settings"]["mirror_axes"] == [0, 1, 2]
    cams = [f for f in summary["files"] if f["kind"] == "cam"]
    assert {(f["layer"], f["method"]) for f in cams} == {
        ("pre_head", "hirescam"), ("encoder.1", "hirescam"), ("pre_head", "gradcam"), ("encoder.1", "gradcam")
    }  # fmt: skip
    assert all(0 < f["stats"]["relevance_mass_region"] <= 1 for f in cams)  # cam_statistics, as every front door
    layout = CaseSummary(["x"], (1, 1, 1), 1, np.eye(4), (1, 1, 1, 1), {}, {}).as_json()  # FileSegCAM's layout too
    assert set(layout) <= set(summary) and set(summary["input"]) == set(layout["input"])
    assert summary["input"]["files"] == [os.path.abspath(f) for f in files] and summary["input"]["channels"] == 2
    assert summary["input"]["shape"] == list(seg.shape) and np.allclose(summary["input"]["affine"], affine)
    assert (case / "case_cam_gradcam_pre_head_class1.png").is_file()
    python = explain_nnunet_case({"hirescam": engine}, files)  # the Python API of the command's pipeline
    assert python.name == "case" and python.summary["predicted_voxels"] == summary["predicted_voxels"]
    np.testing.assert_allclose(python.maps[("encoder.1", "hirescam")][0], cam, rtol=1e-5, atol=1e-7)


def test_explain_regions_without_mirroring(nnunet_folder, nnunet_case, tmp_path):
    """``--no-mirroring``, one fold, a folder of cases; a voxel, a box and the label given on the input file's grid
    land where nnU-Net's transpose, crop and resampling put them."""
    folder = tmp_path / "in"
    folder.mkdir()
    for c in (0, 1):
        shutil.copy(nnunet_case[f"image{c}"], folder / f"ball_{c:04d}.nii.gz")
    common = [str(folder), "--nnunet", str(nnunet_folder), "--folds", "0", "--no-mirroring", "--no-png", "--quiet"]
    label = load(nnunet_case["label"])[0] > 0
    centre = np.argwhere(label).mean(0).round().astype(int)
    model = NNUNetModel(nnunet_folder, folds=[0], use_mirroring=False)
    case = model.preprocess([folder / "ball_0000.nii.gz", folder / "ball_0001.nii.gz"])
    mid, low, high = np.rint(model.file_voxels_to_grid(np.stack([centre, centre - 2, centre + 2]), case)).astype(int)
    point = ",".join(map(str, centre))
    box = f"{','.join(map(str, centre - 2))}:{','.join(map(str, centre + 2))}"
    regions = {
        f"voxel:{point}": ([], {"voxel": mid.tolist()}),
        f"box:{box}": ([], {"start": np.minimum(low, high).tolist(), "end": (np.maximum(low, high) + 1).tolist()}),
        "label": (["--label", str(nnunet_case["label"])], {"kind": "label"}),
    }
    for region, (extra, expected) in regions.items():
        out = tmp_path / region.split(":")[0]
        assert main(["explain", *common, "--region", region, *extra, "--output", str(out)]) == 0
        summary = json.loads((out / "ball" / "ball_segcam.json").read_text())
        assert summary["settings"]["mirror_axes"] == [] and summary["settings"]["folds"] == ["0"]
        assert {k: summary["region_on_network_grid"][k] for k in expected} == expected
        cam, _ = load(out / "ball" / "ball_cam_hirescam_pre_head_class1.nii.gz")
        stats = next(f["stats"] for f in summary["files"] if f["kind"] == "cam")
        assert cam.shape == label.shape and np.isfinite(cam).all() and stats["region_voxels"] > 0
    rows = read_table(tmp_path / "label" / "segcam_stats.csv")
    assert all(row["relevance_mass_label"] not in ("", None) for row in rows.values())  # the label's columns, filled
    with_label = model.preprocess([folder / "ball_0000.nii.gz", folder / "ball_0001.nii.gz"], nnunet_case["label"])
    assert stats["region_voxels"] == int((with_label.label == 1).sum())  # the rows on the network grid, as every door's


def test_explain_errors(nnunet_folder, nnunet_case, tmp_path, capsys):
    image = str(nnunet_case["image0"])
    assert main(["explain", image, "--nnunet", str(nnunet_folder), "--output", str(tmp_path)]) == 1
    assert "needs channels 0000..0001" in capsys.readouterr().err
    assert main(["explain", image, "--nnunet", str(nnunet_folder), "--roi-size", "32", "--output", str(tmp_path)]) == 1
    assert "--roi-size do not apply to --nnunet" in capsys.readouterr().err
    assert main(["explain", image, "--nnunet", str(tmp_path), "--output", str(tmp_path)]) == 1
    assert "plans.json is missing" in capsys.readouterr().err
    args = ["explain", image, str(nnunet_case["image1"]), "--nnunet", str(nnunet_folder), "--folds", "4"]
    assert main([*args, "--output", str(tmp_path)]) == 1
    assert "folds with checkpoint_final.pth: [0, 1]" in capsys.readouterr().err


def test_layers(nnunet_folder, capsys):
    assert main(["layers", "--nnunet", str(nnunet_folder)]) == 0
    printed = capsys.readouterr().out
    assert "decoder.stages.1" in printed and "pre_head     -> decoder.stages.1" in printed
    # a probe the network cannot take (one input channel too many): one line naming the shape, exit status 1
    assert main(["layers", "--nnunet", str(nnunet_folder), "--input-shape", "1", "5", "16", "16", "16"]) == 1
    assert "failed on a random probe input of shape (1, 5, 16, 16, 16)" in capsys.readouterr().err
