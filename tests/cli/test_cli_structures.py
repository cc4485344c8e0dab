# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``explain --structures``: each case's ``<case>_structures.csv`` recomputed from the written NIfTI maps and the
segmentation (or the given label volume) on the input file's grid, and the data set's ``segcam_structures.csv``."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import NIFTI_AFFINE, SHAPE, network_options

from monai_segcam.cli import main

CLASSES = (1, 2)


def _read(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _expected(cam: np.ndarray, labels: np.ndarray) -> dict[int, tuple[float, float]]:
    """share and density by their definitions, per label value of ``labels``."""
    positive = np.maximum(cam, 0)
    return {int(s): (positive[labels == s].sum() / positive.sum(), cam[labels == s].mean()) for s in np.unique(labels)}


def _check_case(folder, name: str, labels: np.ndarray, names: dict[int, str]) -> list[dict]:
    rows = _read(folder / f"{name}_structures.csv")
    assert list(rows[0]) == ["layer", "method", "class", "structure", "share", "density"]
    by_key = {(row["class"], row["structure"]): row for row in rows}
    assert len(by_key) == len(rows) == len(CLASSES) * len(np.unique(labels))
    for c in CLASSES:
        cam = np.asarray(nib.load(folder / f"{name}_cam_hirescam_pre_head_class{c}.nii.gz").dataobj, dtype=np.float64)
        for s, (share, density) in _expected(cam, labels).items():
            row = by_key[(str(c), names.get(s, str(s)))]
            assert (row["layer"], row["method"]) == ("pre_head", "hirescam")
            assert float(row["share"]) == pytest.approx(share, abs=1e-4)
            assert float(row["density"]) == pytest.approx(density, abs=1e-4, rel=1e-4)
    summary = json.loads((folder / f"{name}_segcam.json").read_text(encoding="utf-8"))
    assert {"file": f"{name}_structures.csv", "kind": "structures"}.items() <= next(
        entry for entry in summary["files"] if entry["kind"] == "structures"
    ).items()
    return rows


def test_structures_of_the_segmentation_and_the_cohort(cli_data, tmp_path):
    output = tmp_path / "out"
    code = main(["explain", str(cli_data["nifti"]), str(cli_data["nrrd"]), *network_options(cli_data["checkpoint"]),
                 "--classes", "1", "2", "--no-png", "--quiet", "--output", str(output)])  # fmt: skip
    assert code == 0
    per_case = {}
    for name in ("case_01_T1", "scan"):
        labels = np.asarray(nib.load(output / name / f"{name}_seg.nii.gz").dataobj)
        assert len(np.unique(labels)) >= 2  # more than one structure
        per_case[name] = _check_case(output / name, name, labels, {})
    cohort = _read(output / "segcam_structures.csv")
    assert list(cohort[0]) == ["layer", "method", "class", "structure", "n", "share_mean", "share_std",
                               "density_mean", "density_std"]  # fmt: skip
    for line in cohort:
        values = [
            row for rows in per_case.values() for row in rows if (row["class"], row["structure"]) == (line["class"],
                                                                                                      line["structure"])
        ]  # fmt: skip
        assert int(line["n"]) == len(values) >= 1
        for column in ("share", "density"):
            numbers = [float(row[column]) for row in values]
            assert float(line[f"{column}_mean"]) == pytest.approx(np.mean(numbers), abs=1e-9)
            assert float(line[f"{column}_std"]) == pytest.approx(np.std(numbers), abs=1e-9)


def test_structures_of_a_given_atlas_with_names(cli_data, tmp_path):
    atlas = np.zeros(SHAPE, np.uint8)
    atlas[:12] = 3
    atlas[12:, :10] = 5
    atlas_path = tmp_path / "atlas.nii.gz"
    nib.Nifti1Image(atlas, NIFTI_AFFINE).to_filename(atlas_path)
    output = tmp_path / "out"
    names = {"3": "left part", "5": "right front"}
    code = main(["explain", str(cli_data["nifti"]), *network_options(cli_data["checkpoint"]), "--classes", "1", "2",
                 "--no-png", "--quiet", "--output", str(output), "--structures", str(atlas_path),
                 "--structure-names", json.dumps(names)])  # fmt: skip
    assert code == 0
    rows = _check_case(output / "case_01_T1", "case_01_T1", atlas, {3: "left part", 5: "right front"})
    assert {row["structure"] for row in rows} == {"0", "left part", "right front"}
    # the label given with --label, on the same grid
    output = tmp_path / "with_label"
    assert main(["explain", str(cli_data["nifti"]), *network_options(cli_data["checkpoint"]), "--classes", "1", "2",
                 "--no-png", "--quiet", "--output", str(output), "--structures", "label",
                 "--label", str(cli_data["label"])]) == 0  # fmt: skip
    label = np.asarray(nib.load(cli_data["label"]).dataobj)
    _check_case(output / "case_01_T1", "case_01_T1", label, {})


def test_structures_none_and_bad_options(cli_data, tmp_path, capsys):
    output = tmp_path / "none"
    assert main(["explain", str(cli_data["nifti"]), *network_options(cli_data["checkpoint"]), "--classes", "1",
                 "--no-png", "--quiet", "--output", str(output), "--structures", "none"]) == 0  # fmt: skip
    assert not list(output.rglob("*structures.csv"))
    base = ["explain", str(cli_data["nifti"]), *network_options(cli_data["checkpoint"]), "--output", str(output)]
    assert main([*base, "--structures", "label"]) == 1
    assert "--structures label needs the ground truth" in capsys.readouterr().err
    assert main([*base, "--structure-names", "[1, 2]"]) == 1
    assert "--structure-names must be a JSON object" in capsys.readouterr().err
