# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Output safety of the CLI, in process: sanitised case names and all-or-nothing case folders."""

from __future__ import annotations

import os

import pytest

from monai_segcam.outputs import CAMWriter, CaseNamer, safe_token, write_text


def test_case_names_stay_inside_output():
    paths = ["../../etc/passwd", "/data/ct scan #1.nii.gz", "/x/ct scan #1.nii.gz", "dicom/", ".hidden.nrrd", "..."]
    namer = CaseNamer()  # the handlers' convention: a second source with the same name gets a hash of its path
    names = [namer(path) for path in paths]
    assert names[:2] == ["passwd", "ct_scan_1"] and names[3:] == ["dicom", "hidden", "case"]
    assert names[2].startswith("ct_scan_1_") and len(names[2]) == len("ct_scan_1_") + 8
    assert namer("/data/ct scan #1.nii.gz") == "ct_scan_1"  # the same source keeps its name
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
