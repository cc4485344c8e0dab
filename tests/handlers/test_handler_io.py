# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The output layer's files (monai_segcam.outputs): safe names, confined paths, atomic writes."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_segcam.outputs import atomic_output, safe_case_name, safe_path, safe_token, write_nifti


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"filename_or_obj": "/data/imagesTs/spleen 12.nii.gz"}, "spleen_12"),
        ("../../etc/passwd", "passwd"),
        ("C:\\scans\\liver_3.nrrd", "liver_3"),
        (["/dicom/series_7/IM0001.dcm", "/dicom/series_7/IM0002.dcm"], "series_7"),
        ("..", "case"),
        ({}, "case"),
        (None, "case"),
        ("/x/.hidden.nii", "hidden"),
    ],
)
def test_safe_case_name(source, expected):
    assert safe_case_name(source) == expected


def test_safe_token_and_path(tmp_path):
    assert safe_token("decoder.0[seg]") == "decoder.0_seg"
    assert safe_path(tmp_path, "a", "b.nii.gz") == os.path.join(tmp_path, "a", "b.nii.gz")
    for escape in ("../evil.nii.gz", "/etc/evil.nii.gz", ".", "a/../../evil"):
        with pytest.raises(ValueError, match="output directory"):
            safe_path(tmp_path, escape)
    os.symlink("/tmp", tmp_path / "link")
    with pytest.raises(ValueError, match="output directory"):
        safe_path(tmp_path, "link", "evil.nii.gz")


def test_save_nifti_keeps_affine_and_values(tmp_path):
    affine = torch.tensor([[0, -1.2, 0, 30.0], [0.8, 0, 0, -10.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]], dtype=torch.float64)
    cam = MetaTensor(torch.rand(1, 6, 5, 4), affine=affine)
    path = write_nifti(cam, "case_cam.nii.gz", output_dir=tmp_path)
    image = nib.load(path)
    assert image.shape == (6, 5, 4) and image.get_data_dtype() == np.float32
    np.testing.assert_allclose(image.affine, affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(image.get_fdata(), cam[0].numpy(), atol=1e-7)
    with pytest.raises(ValueError, match="output directory"):
        write_nifti(cam, "../outside.nii.gz", output_dir=tmp_path)
    assert os.listdir(tmp_path) == ["case_cam.nii.gz"]


def test_failed_writes_leave_no_partial_file(tmp_path):
    with pytest.raises(RuntimeError, match="writer failed"), atomic_output(tmp_path / "stats.csv") as tmp:
        with open(tmp, "w") as stream:
            stream.write("case,max\nhalf a ro")
        raise RuntimeError("writer failed")
    assert os.listdir(tmp_path) == []

    (tmp_path / "old.nii.gz").write_bytes(b"previous version")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_output(tmp_path / "old.nii.gz") as tmp:
        assert tmp.endswith(".nii.gz") and os.path.dirname(tmp) == str(tmp_path)
        nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp)
        raise RuntimeError("writer failed")
    assert (tmp_path / "old.nii.gz").read_bytes() == b"previous version"

    (tmp_path / "a_directory.nii.gz").mkdir()
    with pytest.raises(OSError):  # the file is written, then os.replace onto a directory fails
        write_nifti(np.zeros((1, 3, 3, 3), np.float32), tmp_path / "a_directory.nii.gz", affine=np.eye(4))
    assert sorted(os.listdir(tmp_path)) == ["a_directory.nii.gz", "old.nii.gz"]
