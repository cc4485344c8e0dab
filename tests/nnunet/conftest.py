# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A tiny trained nnU-Net v2 model folder (two folds) and a test case, built once per session with nnU-Net's own API
(see ``build_model_folder.py``). Test modules needing nnU-Net v2 skip themselves without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def nnunet_folder(tmp_path_factory) -> Path:
    """The model folder ``nnUNetTrainer__nnUNetPlans__3d_fullres`` with ``fold_0`` and ``fold_1``."""
    root = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(HERE / "build_model_folder.py"), str(root)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"building the nnU-Net model folder failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def nnunet_case(tmp_path_factory) -> dict[str, Path]:
    """A two-channel test case ``case_0000/0001.nii.gz`` with its label, on another grid than the training data: a
    zero border (nnU-Net crops it), 1 mm slices (resampled to the plans' 1.5 mm) and a flipped, shifted geometry."""
    import SimpleITK as sitk
    from build_model_folder import synthetic_case

    folder = tmp_path_factory.mktemp("nnunet_case")
    rng = np.random.default_rng(7)
    images, label = synthetic_case(rng, (22, 26, 21))
    images = np.pad(images, ((0, 0), (2, 1), (0, 3), (1, 0)))
    label = np.pad(label, ((2, 1), (0, 3), (1, 0)))
    paths = {f"image{c}": folder / f"case_{c:04d}.nii.gz" for c in range(2)}
    paths["label"] = folder / "case_label.nii.gz"
    for path, array in [(paths["image0"], images[0]), (paths["image1"], images[1]), (paths["label"], label)]:
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((1.0, 1.0, 1.0))
        itk.SetOrigin((10.0, -20.0, 5.0))
        itk.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(itk, str(path))
    return paths
