# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""One case through every front door (the command line on a bundle, SegCAMHandler in an evaluator, SegCAMd +
Invertd + SaveSegCAMd, FileSegCAM + write_case_folder in Python): the same file names, the same maps on the same
grid, the same statistics, and the same pictures (the PNG of a map drawn on the input file's grid, a grid stored
with permuted and flipped axes, in the one display convention through the map's peak)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import Compose, Invertd

from monai_segcam.cli import main
from monai_segcam.explainers import make_segcam
from monai_segcam.files import FileSegCAM
from monai_segcam.handlers import SegCAMHandler
from monai_segcam.metrics import STAT_COLUMNS
from monai_segcam.outputs import CAMWriter, CaseSummary, read_table, write_case_folder
from monai_segcam.transforms import SaveSegCAMd, SegCAMd
from monai_segcam.utils.loading import load_bundle, load_checkpoint

NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2]}
AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -10.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (26, 22, 12)
LAYER, CLASSES = "encoder.0", [1, 2]  # a layer key with a dot: "encoder.0" in every file name
ROI = [16, 16, 16]


def transforms(keys: list[str]) -> list[dict]:
    modes = ["bilinear", "nearest"][: len(keys)]
    return [
        {"_target_": "LoadImaged", "keys": keys},
        {"_target_": "EnsureChannelFirstd", "keys": keys},
        {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS", "labels": None},
        {"_target_": "Spacingd", "keys": keys, "pixdim": [1.5, 1.5, 2.0], "mode": modes},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1.0, "a_max": 3.0, "b_min": 0.0, "b_max": 1.0},
    ]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """An image with a non-trivial affine, its label, and a bundle (network, preprocessing, sliding window)."""
    root = tmp_path_factory.mktemp("front_doors")
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.3, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[6:16, 5:14, 3:8], label[17:23, 4:10, 4:9] = 1, 2
    image[label > 0] += 1.5 + label[label > 0]
    nib.save(nib.Nifti1Image(image, AFFINE), root / "case 7.nii.gz")
    nib.save(nib.Nifti1Image(label, AFFINE), root / "case 7_seg.nii.gz")
    bundle = root / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    torch.save(UNet(**NET).state_dict(), bundle / "models" / "model.pt")
    config = {
        "network_def": {"_target_": "UNet", **NET},
        "preprocessing": {"_target_": "Compose", "transforms": transforms(["image"])},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": ROI, "sw_batch_size": 2, "overlap": 0.25},
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    return root


def network(case) -> UNet:
    net = UNet(**NET)
    net.load_state_dict(torch.load(case / "bundle" / "models" / "model.pt", weights_only=True))
    return net.eval()


def preprocessing() -> Compose:
    from monai.bundle import ConfigParser

    parser = ConfigParser({"pre": {"_target_": "Compose", "transforms": transforms(["image", "label"])}})
    return parser.get_parsed_content("pre")


def by_command_line(case, out) -> tuple[dict, dict]:
    status = main(["explain", str(case / "case 7.nii.gz"), "--bundle", str(case / "bundle"), "--label",
                   str(case / "case 7_seg.nii.gz"), "--layers", LAYER, "--classes", *map(str, CLASSES),
                   "--device", "cpu", "--quiet", "--output", str(out)])  # fmt: skip
    assert status == 0
    files = {p.name: p for p in (out / "case_7").glob("*_cam_*")}
    by_command_line.summary = json.loads((out / "case_7" / "case_7_segcam.json").read_text())
    return files, read_table(out / "segcam_stats.csv")


def by_handler(case, out) -> tuple[dict, dict]:
    pre = preprocessing()
    data = [{"image": str(case / "case 7.nii.gz"), "label": str(case / "case 7_seg.nii.gz")}]
    handler = SegCAMHandler(layers=[LAYER], classes=CLASSES, output_dir=out, save_png=True)
    post = Invertd([handler.output_keys[LAYER], "pred"], pre, orig_keys="image", nearest_interp=False)
    inferer = SlidingWindowInferer(ROI, 2, 0.25)
    SupervisedEvaluator("cpu", DataLoader(Dataset(data, pre)), network(case), inferer=inferer, postprocessing=post,
                        val_handlers=[handler]).run()  # fmt: skip
    return {p.name: p for p in out.glob("*_cam_*")}, read_table(out / "segcam_stats.csv")


def by_transforms(case, out) -> tuple[dict, list[dict]]:
    pre, net, inferer = preprocessing(), network(case), SlidingWindowInferer(ROI, 2, 0.25)
    item = pre({"image": str(case / "case 7.nii.gz"), "label": str(case / "case 7_seg.nii.gz")})
    with torch.no_grad():
        item["pred"] = inferer(item["image"][None], net)[0]
    post = Compose([
        SegCAMd("image", net, label_key="label", layers=[LAYER], classes=CLASSES, inferer=inferer, stats_key="stats"),
        Invertd(f"cam_{LAYER}", pre, orig_keys="image", nearest_interp=False),
        SaveSegCAMd(layers=[LAYER], classes=CLASSES, output_dir=out),
    ])  # fmt: skip
    rows = post(item)["stats"]
    return {p.name: p for p in out.glob("*_cam_*.nii.gz")}, rows


def by_python(case, out) -> tuple[dict, list[dict]]:
    model = load_bundle(case / "bundle")
    load_checkpoint(model.network, case / "bundle" / "models" / "model.pt")
    explainer = FileSegCAM(model, {"hirescam": make_segcam(model.network, model.inferer, layers=LAYER)})
    explained = explainer(str(case / "case 7.nii.gz"), str(case / "case 7_seg.nii.gz"), classes=CLASSES)
    writer = CAMWriter(out / explained.name, png=True)
    with writer.all_or_nothing():
        by_python.summary = write_case_folder(writer, explained)
    return {p.name: p for p in (out / explained.name).glob("*_cam_*")}, explained.rows


def assert_same_summary(summary, reference):
    """One case summary: the pipeline's part of ``<case>_segcam.json`` in :py:class:`CaseSummary`'s layout, equal
    between the doors, and the same files listed."""
    layout = CaseSummary(["x"], (1, 1, 1), 1, np.eye(4), (1, 1, 1, 1), {}, {}).as_json()
    for found in (summary, reference):
        assert set(layout) <= set(found) and set(found["input"]) == set(layout["input"]), sorted(found)
    assert {key: summary[key] for key in layout} == {key: reference[key] for key in layout}
    listed = [{(f["file"], f["kind"], f.get("layer"), f.get("class")) for f in s["files"]} for s in (summary, reference)]
    assert listed[0] == listed[1]


def assert_same_picture(path, reference):
    """The same PNG up to the colours of a few voxels whose map values differ in the last digits between doors."""
    from matplotlib.image import imread

    picture, expected = imread(path), imread(reference)
    assert picture.shape == expected.shape, (path, picture.shape, expected.shape)
    differing = np.abs(picture - expected).max(axis=-1) > 0.05
    assert differing.mean() < 1e-3, (path, differing.mean())


def test_every_front_door_gives_the_same_files_and_statistics(case, tmp_path):
    cli_files, cli_rows = by_command_line(case, tmp_path / "cli")
    handler_files, handler_rows = by_handler(case, tmp_path / "handler")
    transform_files, transform_rows = by_transforms(case, tmp_path / "transform")
    python_files, python_rows = by_python(case, tmp_path / "python")
    names = {f"case_7_cam_hirescam_{LAYER}_class{c}.nii.gz" for c in CLASSES}
    pictures = {name.replace(".nii.gz", ".png") for name in names}
    assert set(transform_files) == names
    assert set(cli_files) == set(handler_files) == set(python_files) == names | pictures
    assert_same_summary(by_command_line.summary, by_python.summary)
    for name in pictures:  # one picture convention: the same PNG by every door that draws one
        assert_same_picture(cli_files[name], handler_files[name])
        assert_same_picture(python_files[name], handler_files[name])
    for name in names:
        reference = nib.load(handler_files[name])
        assert reference.shape == SHAPE
        np.testing.assert_allclose(reference.affine, AFFINE, atol=1e-4)
        scale = max(1.0, float(np.abs(reference.get_fdata()).max()))
        for other in (cli_files[name], transform_files[name], python_files[name]):
            np.testing.assert_allclose(nib.load(other).affine, reference.affine, atol=1e-5)
            np.testing.assert_allclose(nib.load(other).get_fdata(), reference.get_fdata(), atol=1e-4 * scale)
    transform_rows = {(r["case"], r["layer"], r["method"], str(r["class"])): r for r in transform_rows}
    python_rows = {(r["case"], r["layer"], r["method"], str(r["class"])): r for r in python_rows}
    assert set(cli_rows) == set(handler_rows) == set(transform_rows) == set(python_rows) == {
        ("case_7", LAYER, "hirescam", str(c)) for c in CLASSES
    }  # fmt: skip
    for key, row in handler_rows.items():
        assert float(row["relevance_mass_label"]) > 0 and float(row["region_voxels"]) > 0, row  # label stats exist
        for column in STAT_COLUMNS:
            expected = float(row[column])
            for other in (cli_rows[key], transform_rows[key], python_rows[key]):
                assert math.isclose(float(other[column]), expected, rel_tol=1e-4, abs_tol=1e-6), (column, other, row)


def by_bundle_overlay(case, out) -> dict:
    """``bundles/segcam.json`` over a bundle's own inference workflow (its Invertd of the prediction), run as users
    run it: ``python -m monai.bundle run``."""
    repo = Path(__file__).resolve().parents[2]
    bundle = case / "bundle"
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config.update({
        "output_dir": str(out),
        "device": "cpu",
        "network": "$@network_def",
        "dataset": {"_target_": "Dataset", "data": [{"image": str(case / "case 7.nii.gz")}], "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
        "postprocessing": {"_target_": "Compose", "transforms": [{
            "_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
            "nearest_interp": False}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": str(bundle / "models" / "model.pt"),
                      "load_dict": {"model": "@network"}, "map_location": "cpu"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "run": ["$@evaluator.run()"],
    })  # fmt: skip
    (bundle / "configs" / "overlaid.json").write_text(json.dumps(config))
    files = f"['configs/overlaid.json',{str(repo / 'bundles' / 'segcam.json')!r}]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--cam_layers", LAYER,
           "--cam_classes", json.dumps(CLASSES)]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return {p.name: p for p in out.glob("*_cam_*")}


@pytest.mark.slow
def test_the_bundle_overlay_draws_the_command_lines_picture(case, tmp_path):
    """The measured bug: the demo bundle and ``monai-segcam explain`` drew the same map rotated by 180 degrees,
    through another slice, with another grey window. On a grid stored with permuted and flipped axes, the overlay's
    PNG (drawn by the handler after the bundle's Invertd) is the command line's."""
    overlay = by_bundle_overlay(case, tmp_path / "overlay")
    cli, _ = by_command_line(case, tmp_path / "cli")
    pictures = {f"case_7_cam_hirescam_{LAYER}_class{c}.png" for c in CLASSES}
    assert pictures <= set(overlay) and pictures <= set(cli)
    for name in pictures:
        assert_same_picture(overlay[name], cli[name])
