# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Helpers of the command-line tests: writers of NIfTI, NRRD/MHA, DICOM series and bundles, and subprocess runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SHAPE = (24, 20, 16)  # (X, Y, Z), MONAI / nibabel index order
NETWORK = "monai.networks.nets.UNet"
NETWORK_ARGS = {
    "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0
}  # fmt: skip
# ITK geometry (LPS): spacing, origin and a non-trivial direction (axes swapped and flipped)
ITK_SPACING, ITK_ORIGIN = (0.7, 0.9, 2.0), (3.0, -4.0, 12.0)
ITK_DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
NIFTI_AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]])


@dataclass
class Result:
    """A finished command: exit status and its output streams."""

    returncode: int
    stdout: str
    stderr: str


def cli_command(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "monai_segcam", *map(str, args)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(*args: str | os.PathLike, timeout: float = 300) -> Result:
    """Run ``python -m monai_segcam ARGS`` in a subprocess."""
    done = subprocess.run(
        cli_command(*args), capture_output=True, text=True, encoding="utf-8", env=cli_env(), timeout=timeout, cwd=REPO
    )
    return Result(done.returncode, done.stdout, done.stderr)


def run_cli_concurrently(
    commands: dict[str, Sequence[str | os.PathLike]], max_running: int = 3, timeout: float = 600
) -> dict[str, Result]:
    """Run several commands, ``max_running`` at a time (start-up, importing torch and MONAI, dominates here)."""
    pending, running, results = list(commands.items()), {}, {}
    started = time.monotonic()
    while pending or running:
        while pending and len(running) < max_running:
            key, args = pending.pop(0)
            running[key] = subprocess.Popen(
                cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                env=cli_env(), cwd=REPO,
            )  # fmt: skip
        key, proc = next(iter(running.items()))
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
        results[key] = Result(proc.returncode, out, err)
        del running[key]
    return results


def itk_ras_affine(image) -> np.ndarray:
    """The voxel -> RAS affine of an ITK image, indexed (X, Y, Z) like MONAI's arrays, from ITK's own geometry."""
    import itk

    direction = itk.array_from_matrix(image.GetDirection())
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=float))
    affine[:3, 3] = np.asarray(image.GetOrigin(), dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = rng.normal(0.0, 0.2, SHAPE)
    volume[6:14, 5:12, 4:10] += 2.0  # a bright block so that the prediction has structure
    return volume.astype(np.float32)


def write_itk(volume: np.ndarray, path: Path) -> None:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.transpose(2, 1, 0)))  # ITK arrays are (Z, Y, X)
    image.SetSpacing(ITK_SPACING)
    image.SetOrigin(ITK_ORIGIN)
    image.SetDirection(itk.matrix_from_array(ITK_DIRECTION))
    itk.imwrite(image, str(path))


def write_dicom_series(volume: np.ndarray, folder: Path) -> None:
    """One CT slice per file with GDCM, the geometry in ImagePositionPatient / PixelSpacing / ImageOrientation."""
    import itk

    folder.mkdir()
    pixels = np.round(volume.transpose(2, 1, 0) * 100).astype(np.int16)  # (Z, Y, X)
    study = "1.2.826.0.1.3680043.2.1125.1.7"
    series = f"{study}.2"
    for k, plane in enumerate(pixels):
        image = itk.image_from_array(np.ascontiguousarray(plane))
        image.SetSpacing(ITK_SPACING[:2])
        tags = image.GetMetaDataDictionary()
        position = np.asarray(ITK_ORIGIN) + np.array([0.0, 0.0, ITK_SPACING[2] * k])
        for tag, value in {
            "0008|0060": "CT",
            "0010|0010": "Phantom^Segcam",
            "0010|0020": "segcam",
            "0020|000d": study,
            "0020|000e": series,
            "0008|0018": f"{series}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{ITK_SPACING[1]}\\{ITK_SPACING[0]}",
            "0018|0050": str(ITK_SPACING[2]),
        }.items():
            tags[tag] = value
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        itk.ImageFileWriter.New(Input=image, FileName=str(folder / f"slice{k:03d}.dcm"), ImageIO=io).Write()


def write_bundle(root: Path, state_dict: dict) -> None:
    """A bundle whose preprocessing reorients and resamples, so outputs must be inverted to the input grid."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.save(state_dict, root / "models" / "model.pt")
    config = {
        "bundle_root": ".",
        "image_key": "image",
        "network_def": {"_target_": "UNet", **NETWORK_ARGS},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": ["image", "label"], "allow_missing_keys": True},
                {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
                {"_target_": "Orientationd", "keys": ["image", "label"], "axcodes": "RAS", "labels": None},
                {
                    "_target_": "Spacingd",
                    "keys": ["image", "label"],
                    "pixdim": [1.0, 1.0, 1.5],
                    "mode": ["bilinear", "nearest"],
                },
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1, "a_max": 3, "b_min": 0, "b_max": 1},
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.25},
    }
    metadata = {
        "name": "tiny_test_bundle",
        "version": "0.0.1",
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1}},
            "outputs": {"pred": {"channel_def": {"0": "background", "1": "block", "2": "rest"}}},
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=1))


def network_options(checkpoint: Path | None = None) -> list[str]:
    """``--network ... --network-args ... [--checkpoint ...] --device cpu``."""
    options = ["--network", NETWORK, "--network-args", json.dumps(NETWORK_ARGS), "--device", "cpu"]
    return options + (["--checkpoint", str(checkpoint)] if checkpoint is not None else [])
