# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMHandler(structures=...) on a real SupervisedEvaluator: each case's ``<case>_structures.csv`` recomputed from
the written (inverted) NIfTI maps and the segmentation the bundle-style postprocessing saved, and the data set's
``segcam_structures.csv``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import AsDiscreted, Compose, Invertd, SaveImaged
from test_segcam_handler import make_net, preprocessing, read_csv, write_cases

from monai_segcam.handlers import SegCAMHandler

NAMES = {0: "background", 1: "box"}


def _evaluator(files, handler, folder) -> SupervisedEvaluator:
    pre = preprocessing()
    post = Compose([
        Invertd(["pred", "cam", "label"], pre, orig_keys="image", nearest_interp=False),
        AsDiscreted("pred", argmax=True),
        SaveImaged("pred", output_dir=folder, output_postfix="seg", separate_folder=False, print_log=False,
                   output_dtype=np.uint8),
    ])  # fmt: skip
    loader = DataLoader(Dataset(files, pre), batch_size=1, num_workers=0)
    return SupervisedEvaluator(torch.device("cpu"), loader, make_net(), postprocessing=post, val_handlers=[handler])


def test_structure_tables_of_the_saved_maps_and_segmentation(tmp_path):
    files = write_cases(tmp_path, n=2)
    out, segs = tmp_path / "cams", tmp_path / "segs"
    handler = SegCAMHandler(classes=[1], output_dir=out, structures=True, structure_names=NAMES)
    _evaluator(files, handler, segs).run()
    per_case = {}
    for i in range(2):
        name = f"case_{i}"
        cam = np.asarray(nib.load(out / f"{name}_cam_hirescam_pre_head_class1.nii.gz").dataobj, dtype=np.float64)
        seg = np.asarray(nib.load(segs / f"case {i}_seg.nii.gz").dataobj)
        assert cam.shape == seg.shape == (16, 14, 12)  # the input file's grid, after inversion
        assert set(np.unique(seg)) == {0, 1}
        rows = {row["structure"]: row for row in read_csv(out / f"{name}_structures.csv")}
        assert set(rows) == {"background", "box"}
        positive = np.maximum(cam, 0)
        for value, structure in NAMES.items():
            inside = seg == value
            assert float(rows[structure]["share"]) == pytest.approx(positive[inside].sum() / positive.sum(), abs=1e-4)
            assert float(rows[structure]["density"]) == pytest.approx(cam[inside].mean(), abs=1e-4, rel=1e-4)
            assert (rows[structure]["layer"], rows[structure]["method"], rows[structure]["class"]) == (
                "pre_head", "hirescam", "1")  # fmt: skip
        per_case[name] = rows
    cohort = {row["structure"]: row for row in read_csv(out / "segcam_structures.csv")}
    for structure in NAMES.values():
        shares = [float(rows[structure]["share"]) for rows in per_case.values()]
        assert cohort[structure]["n"] == "2"
        assert float(cohort[structure]["share_mean"]) == pytest.approx(np.mean(shares), abs=1e-9)
        assert float(cohort[structure]["share_std"]) == pytest.approx(np.std(shares), abs=1e-9)


def test_structures_of_another_key_and_errors(tmp_path):
    files = write_cases(tmp_path, n=1)
    out = tmp_path / "cams"
    handler = SegCAMHandler(classes=[1], output_dir=out, structures="label")  # the ground truth, inverted likewise
    _evaluator(files, handler, tmp_path / "segs").run()
    label = np.asarray(nib.load(files[0]["label"]).dataobj)
    rows = read_csv(out / "case_0_structures.csv")
    assert [row["structure"] for row in rows] == ["0", "1"]
    assert handler.stats.structure_rows and handler.stats.structure_rows[0]["case"] == "case_0"
    inverted = np.asarray(nib.load(out / "case_0_cam_hirescam_pre_head_class1.nii.gz").dataobj)
    assert inverted.shape == label.shape
    bad = SegCAMHandler(classes=[1], output_dir=tmp_path / "bad", structures="atlas", on_error="skip")
    _evaluator(files, bad, tmp_path / "segs2").run()
    assert "no volume under 'atlas'" in bad.failed["case_0"]
    with pytest.raises(ValueError, match="give output_dir"):
        SegCAMHandler(classes=[1], structures=True)
