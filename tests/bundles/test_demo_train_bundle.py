# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""End-to-end runs of the ``segcam_demo`` bundle through ``python -m monai.bundle run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "segcam_demo"


def run_bundle(config: str, *overrides: str, cwd: Path = REPO_ROOT) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / config)]
    cmd += ["--bundle_root", str(BUNDLE), *overrides]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def network_from(config: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / config)
    return parser.get_parsed_content("network_def")


@pytest.mark.slow
def test_train_one_epoch(tmp_path):
    committed = BUNDLE / "models" / "model.pt"
    committed_mtime = committed.stat().st_mtime_ns if committed.exists() else None
    run_bundle(
        "train.json",
        "--dataset_dir", str(tmp_path / "data"),
        "--ckpt_dir", str(tmp_path / "models"),
        "--output_dir", str(tmp_path / "eval"),
        "--num_train", "2",
        "--num_val", "1",
        "--phantom_shape", "[56, 56, 48]",
        "--max_epochs", "1",
        "--val_interval", "1",
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "image000.nii.gz", "image001.nii.gz", "image002.nii.gz", "label000.nii.gz", "label001.nii.gz", "label002.nii.gz"
    ]  # fmt: skip
    state_dict = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    network_from("train.json").load_state_dict(state_dict)  # strict: the file is the plain network state_dict
    network_from("inference.json").load_state_dict(state_dict)  # and inference builds the same network
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == committed_mtime


@pytest.mark.slow
def test_inference_on_samples(tmp_path):
    run_bundle("inference.json", "--output_dir", str(tmp_path))
    images = sorted((BUNDLE / "sample_data").glob("image*.nii.gz"))
    assert len(images) == 3
    for image_file in images:
        image = nib.load(image_file)
        seg = nib.load(tmp_path / image_file.name.replace(".nii.gz", "_seg.nii.gz"))
        assert seg.shape == image.shape
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
        pred = np.asanyarray(seg.dataobj)
        label = np.asanyarray(nib.load(image_file.parent / image_file.name.replace("image", "label")).dataobj)
        for c in (1, 2):
            dice = 2 * np.sum((pred == c) & (label == c)) / (np.sum(pred == c) + np.sum(label == c))
            assert dice > 0.7, f"{image_file.name} class {c}: Dice {dice:.3f}"
