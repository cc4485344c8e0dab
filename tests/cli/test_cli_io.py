# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Output safety of the CLI, in process: sanitised case names and all-or-nothing case folders."""

from __future__ import annotations

import os

import pytest

from monai_segcam.cli.io import case_names, sanitize, staged_directory


def test_case_names_stay_inside_output():
    paths = ["../../etc/passwd", "/data/ct scan #1.nii.gz", "/x/ct scan #1.nii.gz", "dicom/", ".hidden.nrrd", "..."]
    names = case_names(paths)
    assert names == ["passwd", "ct_scan_1", "ct_scan_1_2", "dicom", "hidden", "case"]
    for name in names:
        assert os.path.basename(name) == name and not name.startswith(".")
    assert sanitize("swinViT[4]") == "swinViT_4" and sanitize("decoder.0") == "decoder_0"


def test_staged_directory_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError), staged_directory(str(tmp_path), "case") as staging:
        open(os.path.join(staging, "case_cam.nii.gz"), "wb").close()
        raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
    with staged_directory(str(tmp_path), "case") as staging:
        open(os.path.join(staging, "a_cam.nii.gz"), "w").close()
    with staged_directory(str(tmp_path), "case") as staging:  # a second run replaces files of an existing folder
        with open(os.path.join(staging, "a_cam.nii.gz"), "w") as stream:
            stream.write("new")
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
    assert (tmp_path / "case" / "a_cam.nii.gz").read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "case").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700
