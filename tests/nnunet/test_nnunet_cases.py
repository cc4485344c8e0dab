# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Cases grouped from files named as nnU-Net names them (no nnU-Net needed)."""

from __future__ import annotations

import pytest

from monai_segcam.nnunet import group_cases


def test_group_cases(tmp_path):
    for name in ("b_0001.nii.gz", "b_0000.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz", "notes.txt"):
        (tmp_path / name).touch()
    cases = group_cases([str(tmp_path)], 2)
    assert [(c, [f.rsplit("/", 1)[-1] for f in files]) for c, files in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])
    ]  # fmt: skip
    assert group_cases(["scan.nii.gz"], 1) == [("scan", ["scan.nii.gz"])]
    with pytest.raises(ValueError, match=r"needs channels 0000..0001, got 0000"):
        group_cases(["a_0000.nii.gz"], 2)
    with pytest.raises(ValueError, match=r"<case>_0000\.nii\.gz"):
        group_cases(["scan.nii.gz"], 2)
