# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Output safety of the CLI, in process: sanitised case names and all-or-nothing case folders."""

from __future__ import annotations

import os

import pytest

from monai_segcam.outputs import CAMWriter, safe_token, unique_case_names, write_text


def test_case_names_stay_inside_output():
    paths = ["../../etc/passwd", "/data/ct scan #1.nii.gz", "/x/ct scan #1.nii.gz", "dicom/", ".hidden.nrrd", "..."]
    names = unique_case_names(paths)
    assert names == ["passwd", "ct_scan_1", "ct_scan_1_2", "dicom", "hidden", "case"]
    for name in names:
        assert os.path.basename(name) == name and not name.startswith(".")
    # one convention for every front door: the handler's (a layer ``decoder.0`` keeps its dot in file names)
    assert safe_token("swinViT[4]") == "swinViT_4" and safe_token("decoder.0") == "decoder.0"


def test_case_files_all_or_nothing(tmp_path):
    writer = CAMWriter(tmp_path / "case")
    with pytest.raises(RuntimeError), writer.all_or_nothing():
        writer.record(write_text("", os.path.join(writer.output_dir, "case_cam.nii.gz")))
        raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
    with writer.all_or_nothing():
        writer.record(write_text("", os.path.join(writer.output_dir, "a_cam.nii.gz")))
    with writer.all_or_nothing():  # a second run replaces files of an existing folder
        writer.record(write_text("new", os.path.join(writer.output_dir, "a_cam.nii.gz")))
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
    assert (tmp_path / "case" / "a_cam.nii.gz").read_text() == "new"
    assert [p.name for p in (tmp_path / "case").iterdir()] == ["a_cam.nii.gz"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "case").stat().st_mode & 0o777 == 0o777 & ~umask  # the usual permissions
