# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Files for the command-line tests, written once per session: NIfTI, NRRD, MHA, a DICOM series, a tiny UNet
checkpoint (and one that does not fit) and a tiny bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import (
    NETWORK_ARGS,
    NIFTI_AFFINE,
    SHAPE,
    Result,
    network_options,
    run_cli_concurrently,
    volume,
    write_bundle,
    write_dicom_series,
    write_itk,
)


@pytest.fixture(scope="session")
def cli_data(tmp_path_factory) -> dict[str, Path]:
    """Paths of the test inputs (see the module docstring), written once."""
    import nibabel as nib
    from monai.networks.nets import UNet

    root = tmp_path_factory.mktemp("cli_data")
    image = volume(0)
    paths = {
        "nifti": root / "case 01 (T1).nii.gz",
        "nrrd": root / "scan.nrrd",
        "mha": root / "scan_b.mha",
        "dicom": root / "dicom_series",
        "two_channels": root / "two_channels.nii.gz",
        "label": root / "label.nii.gz",
        "corrupt": root / "corrupt.nii.gz",
        "checkpoint": root / "unet.pt",
        "wrong_checkpoint": root / "wrong.pt",
        "bundle": root / "bundle",
    }
    nib.Nifti1Image(image, NIFTI_AFFINE).to_filename(paths["nifti"])
    nib.Nifti1Image(np.stack([image, image], -1), NIFTI_AFFINE).to_filename(paths["two_channels"])
    label = np.zeros(SHAPE, np.uint8)
    label[6:14, 5:12, 4:10] = 1
    nib.Nifti1Image(label, NIFTI_AFFINE).to_filename(paths["label"])
    paths["corrupt"].write_bytes(b"this is not a NIfTI file")
    write_itk(image, paths["nrrd"])
    write_itk(volume(1), paths["mha"])
    write_dicom_series(image, paths["dicom"])
    torch.manual_seed(0)
    state = UNet(**NETWORK_ARGS).state_dict()
    torch.save({"model": state, "epoch": 3}, paths["checkpoint"])
    torch.save(UNet(**{**NETWORK_ARGS, "channels": [4, 6]}).state_dict(), paths["wrong_checkpoint"])
    write_bundle(paths["bundle"], state)
    return paths


@pytest.fixture(scope="session")
def cli_runs(cli_data, tmp_path_factory) -> dict[str, tuple[Result, Path]]:
    """Every subprocess of the CLI tests, run up front a few at a time: ``{name: (result, output folder)}``."""
    data = cli_data
    net = network_options(data["checkpoint"])
    cam = ["--classes", "1", "--no-png", "--quiet"]
    commands = {
        "formats": ["explain", data["nifti"], data["nrrd"], data["mha"], data["dicom"], *net, "--layers", "pre_head",
                    "bottleneck", "--method", "hirescam", "--classes", "1", "--roi-size", "16", "--overlap", "0.5"],
        "bundle": ["explain", data["nifti"], data["dicom"], "--bundle", data["bundle"], "--method", "layercam",
                   "gradcam", "scorecam", "--region", "label", "--label", data["label"], data["label"], "--no-png", "--normalize",
                   "--quiet",
                   "--device", "cpu"],
        "layers": ["layers", *network_options(), "--input-shape", "1", "1", "16", "16", "16"],
        "missing_image": ["explain", data["nifti"].with_name("absent.nii.gz"), *net, *cam],
        "corrupt": ["explain", data["corrupt"], *net, *cam],
        "channels": ["explain", data["two_channels"], *net, *cam],
        "checkpoint": ["explain", data["nifti"], *network_options(data["wrong_checkpoint"]), *cam],
        "unknown_layer": ["explain", data["nifti"], *net, "--layers", "model.1.submodul", *cam],
        "debug": ["explain", data["nifti"], *net, "--layers", "model.9", "--debug", *cam],
        "cuda": ["explain", data["nifti"], *net, "--device", "cuda:0", *cam],
        "no_label": ["explain", data["nifti"], *net, "--region", "fn", *cam],
        "box": ["explain", data["nifti"], *net, "--layers", "pre_head", "--method", "hirescam",
                "--region", "box:4,5,3:10,12,8", "--intensity-range", "-1", "3", "--zscore", *cam],
        "voxel_bundle": ["explain", data["nifti"], "--bundle", data["bundle"], "--layers", "pre_head", "--method",
                         "hirescam", "--region", "voxel:5,7,9", *cam],
        "multi_label": ["explain", data["nifti"], *net, "--multi-label", "--layers", "pre_head", "--method", "hirescam",
                        "--classes", "0", "2", "--no-png", "--quiet"],
        "voxel_outside": ["explain", data["nifti"], *net, "--region", "voxel:5,7,16", *cam],
        "bad_region": ["explain", data["nifti"], *net, "--region", "box:1,2,3", *cam],
        "one_case_fails": ["explain", data["nifti"], data["corrupt"], *net, *cam],
        "amp": ["explain", data["nifti"], *net, "--method", "gradcam", "--amp", "--activation-budget", "0.5", *cam],
    }  # fmt: skip
    outputs = {}
    for name, args in commands.items():
        if name != "layers":
            outputs[name] = tmp_path_factory.mktemp(f"out_{name}")
            args += ["--output", outputs[name]]
    results = run_cli_concurrently(commands)
    return {name: (results[name], outputs.get(name)) for name in commands}
