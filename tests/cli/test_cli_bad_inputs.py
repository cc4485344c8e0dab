# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Every bad input gets a useful answer from ``monai-segcam explain``: the file, what is wrong and what to do, in one
line, exit status 1, no traceback, nothing left behind for the failed case (no folder, no partial file, no empty
``--output``), and in a batch the other cases complete. Each bad file is given within one batch (two subprocesses:
one with a network, one with a bundle that resamples) and alone (the command's ``main`` in this process, its
terminal output captured at the file descriptors: start-up would dominate a subprocess each); ``--classes`` and
``--layers`` mistakes are refused before anything runs, for one file or many."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import NIFTI_AFFINE, SHAPE, Result, network_options, run_cli_concurrently, volume

# file name -> what its one error line must say (besides the file's path)
BAD = {
    "flat.nii.gz": ["this network is 3D: give a 3D volume", "2D image of shape (24, 20)"],
    "nan.nii.gz": ["2 voxel(s) are NaN or infinite", "replace them"],
    "two_channels.nii.gz": ["gives 2 channel(s) but the network expects 1", "give a 1-channel volume"],
    "tiny.nii.gz": ["the volume (1, 2, 2) is smaller than this network's minimum of 2 × 2 × 2 voxels",
                    "give a larger volume"],
    "truncated.nii.gz": ["cannot read image", "it may be truncated or not an image"],
    "empty.nii.gz": ["cannot read image", "the file is empty (0 bytes)"],
    "absent.nii.gz": ["image not found:", "check the path"],
    "empty_folder": ["cannot read image", "the folder is empty; give a DICOM series folder"],
}  # fmt: skip
# with the bundle (it resamples to 1 x 1 x 1.5 mm): an absurd spacing, a label with a value that is no class
BAD_BUNDLE = {
    "micro_spacing.nii.gz": ["its voxel spacing 0.02 × 0.02 × 0.02 mm", "resamples to a (1, 1, 1) network input",
                             "below this network's minimum of 2 × 2 × 2 voxels", "check the file's affine"],
    "label7.nii.gz": ["label", "holds the value(s) 7, but the network's classes are 0-2",
                      "give a label map of the network's class indices"],
}  # fmt: skip
NOISE = ("Traceback", "No Series were found", "swig", "Swig", "nvImageCodec", "Warning")
GOOD_FILES = {"ok_seg.nii.gz", "ok_cam_hirescam_pre_head_class1.nii.gz", "ok_segcam.json"}


def _write_inputs(root: Path) -> dict[str, Path]:
    image = volume(0)
    paths = {name: root / name for name in [*BAD, *BAD_BUNDLE, "ok.nii.gz", "ct_int16.nii.gz", "label.nii.gz"]}
    nib.Nifti1Image(image, NIFTI_AFFINE).to_filename(paths["ok.nii.gz"])
    nib.Nifti1Image(np.round(image * 300).astype(np.int16), NIFTI_AFFINE).to_filename(paths["ct_int16.nii.gz"])
    nib.Nifti1Image(image[:, :, 0], NIFTI_AFFINE).to_filename(paths["flat.nii.gz"])
    nan = image.copy()
    nan[3, 4, 5], nan[6, 7, 8] = np.nan, np.inf
    nib.Nifti1Image(nan, NIFTI_AFFINE).to_filename(paths["nan.nii.gz"])
    nib.Nifti1Image(np.stack([image, image], -1), NIFTI_AFFINE).to_filename(paths["two_channels.nii.gz"])
    nib.Nifti1Image(image[:1, :2, :2], NIFTI_AFFINE).to_filename(paths["tiny.nii.gz"])
    whole = paths["ok.nii.gz"].read_bytes()
    paths["truncated.nii.gz"].write_bytes(whole[: len(whole) // 2])
    assert len(gzip.decompress(whole)) > len(whole) // 2  # really cut inside the data
    paths["empty.nii.gz"].write_bytes(b"")
    paths["empty_folder"].mkdir()
    nib.Nifti1Image(image, np.diag([0.02, 0.02, 0.02, 1.0])).to_filename(paths["micro_spacing.nii.gz"])
    label = np.zeros(SHAPE, np.uint8)
    label[6:14, 5:12, 4:10] = 1
    nib.Nifti1Image(label, NIFTI_AFFINE).to_filename(paths["label.nii.gz"])
    label[1:3, 1:3, 1:3] = 7
    nib.Nifti1Image(label, NIFTI_AFFINE).to_filename(paths["label7.nii.gz"])
    return paths


@pytest.fixture(scope="module")
def inputs(cli_data, tmp_path_factory) -> dict:
    """The input files and the model options of the commands."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = _write_inputs(root)
    net = [*network_options(cli_data["checkpoint"]), "--classes", "1", "--layers", "pre_head", "--no-png", "--quiet"]
    bundle = ["--bundle", cli_data["bundle"], "--device", "cpu", "--classes", "1", "--layers", "pre_head", "--no-png",
              "--quiet"]  # fmt: skip
    yield {"root": root, "paths": paths, "net": net, "bundle": bundle}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def batches(inputs) -> dict:
    """The two batches, run up front side by side: ``{name: (result, output folder)}``."""
    paths, ok, ct = inputs["paths"], inputs["paths"]["ok.nii.gz"], inputs["paths"]["ct_int16.nii.gz"]
    commands = {
        "network": ["explain", ok, *(paths[name] for name in BAD), ct, *inputs["net"]],
        "bundle": ["explain", ok, paths["micro_spacing.nii.gz"], ct, "--label", paths["label.nii.gz"],
                   paths["label.nii.gz"], paths["label7.nii.gz"], *inputs["bundle"]],
    }  # fmt: skip
    outputs = {name: inputs["root"] / "out" / f"batch_{name}" for name in commands}
    for name, args in commands.items():
        args += ["--output", outputs[name]]  # not there yet: the command creates it
    results = run_cli_concurrently(commands)
    return {name: (results[name], outputs[name]) for name in commands}


def run_main(capfd, *args) -> Result:
    """``monai-segcam ARGS`` in this process, with what it wrote to the terminal (file descriptors 1 and 2)."""
    from monai_segcam.cli import main

    capfd.readouterr()
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return Result(code, out, err)


def _alone(capfd, inputs, name: str) -> tuple[Result, Path]:
    paths, output = inputs["paths"], inputs["root"] / "out" / f"alone_{name}"
    if name == "micro_spacing.nii.gz":
        args = [paths[name], *inputs["bundle"]]
    elif name == "label7.nii.gz":
        args = [paths["ok.nii.gz"], "--label", paths[name], *inputs["bundle"]]
    else:
        args = [paths[name], *inputs["net"]]
    return run_main(capfd, "explain", *args, "--output", output), output


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _check_line(line: str, path: Path, texts: list[str]) -> None:
    assert line.startswith("monai-segcam: error: ") and str(path) in line, line
    for text in texts:
        assert text in line, (text, line)


@pytest.mark.parametrize("name", [*BAD, *BAD_BUNDLE])
def test_a_bad_file_alone(capfd, inputs, name):
    result, output = _alone(capfd, inputs, name)
    assert result.returncode == 1 and result.stdout == ""
    lines = _errors(result)
    assert len(lines) == 1, result.stderr
    _check_line(lines[0], inputs["paths"][name], (BAD | BAD_BUNDLE)[name])
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    assert not output.exists()  # no empty --output, no case folder, no staging folder


def _check_complete(folder: Path) -> None:
    """The case's maps, segmentation and summary are there, and no temporary file of the writer."""
    names = {p.name for p in folder.iterdir()}
    assert names >= GOOD_FILES and not any(name.startswith(".") or "tmp" in name for name in names), names


def _table(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "segcam_stats.csv", newline="", encoding="utf-8") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def test_bad_files_in_a_batch_are_recorded_and_the_others_complete(batches, inputs):
    (result, output), paths = batches["network"], inputs["paths"]
    assert result.returncode == 1
    lines = _errors(result)
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    assert lines[-1] == f"monai-segcam: error: {len(BAD)} of {len(BAD) + 2} case(s) failed"
    for name, texts in BAD.items():  # one line per failed case, naming its file
        matching = [line for line in lines[:-1] if str(paths[name]) in line]
        assert len(matching) == 1, (name, lines)
        _check_line(matching[0], paths[name], texts)
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == ["ct_int16", "ok"]  # nothing of the failed
    assert (output / "segcam_stats.csv").is_file()
    _check_complete(output / "ok")
    summary = json.loads(
        (output / "ct_int16" / "ct_int16_segcam.json").read_text(encoding="utf-8")
    )  # int16 CT just works
    assert summary["input"]["shape"] == list(SHAPE)
    cam = np.asarray(nib.load(output / "ct_int16" / "ct_int16_cam_hirescam_pre_head_class1.nii.gz").dataobj)
    assert cam.shape == SHAPE and np.isfinite(cam).all()
    table = _table(output)
    assert table["ok"]["status"] == "ok" and table["ct_int16"]["status"] == "ok"
    failed = {case: row for case, row in table.items() if row["status"] == "failed"}
    assert len(failed) == len(BAD) and all(row["error"] for row in failed.values())


def test_bundle_batch_refuses_an_absurd_spacing_and_a_label_that_is_no_class(batches, inputs):
    (result, output), paths = batches["bundle"], inputs["paths"]
    assert result.returncode == 1
    lines = _errors(result)
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    assert lines[-1] == "monai-segcam: error: 2 of 3 case(s) failed"
    for name in BAD_BUNDLE:
        _check_line(next(line for line in lines if str(paths[name]) in line), paths[name], BAD_BUNDLE[name])
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == ["ok"]
    _check_complete(output / "ok")


@pytest.mark.parametrize("images", [1, 2])
def test_classes_and_layers_are_checked_before_any_prediction(capfd, inputs, images):
    given = [inputs["paths"]["ok.nii.gz"], inputs["paths"]["ct_int16.nii.gz"]][:images]
    output = inputs["root"] / "out" / f"refused_{images}"
    result = run_main(capfd, "explain", *given, *inputs["net"], "--classes", "1", "5", "--output", output)
    assert result.returncode == 1 and _errors(result) == [
        "monai-segcam: error: --classes 1 5: class 5 is not an output of this network: its classes are 0, 1, 2."
    ]  # fmt: skip
    assert not output.exists()
    result = run_main(capfd, "explain", *given, *inputs["net"], "--layers", "model.1.submodul", "--output", output)
    lines = _errors(result)
    assert result.returncode == 1 and len(lines) == 1
    for text in ("Unknown layer 'model.1.submodul'", "Closest names: ['model.1.submodule'",
                 "Run `monai-segcam layers --network monai.networks.nets.UNet --network-args '"):  # fmt: skip
        assert text in lines[0], lines[0]
    assert "list_layers" not in lines[0] and not output.exists()


def test_a_class_out_of_range_is_answered_with_the_bundle_class_names(capfd, inputs):
    output = inputs["root"] / "out" / "refused_bundle"
    result = run_main(capfd, "explain", inputs["paths"]["ok.nii.gz"], *inputs["bundle"], "--classes", "3", "--output",
                      output)  # fmt: skip
    assert result.returncode == 1 and _errors(result) == [
        "monai-segcam: error: --classes 3: class 3 is not an output of this network: its classes are 0 (background), "
        "1 (block), 2 (rest)."
    ]  # fmt: skip
    assert not output.exists()
