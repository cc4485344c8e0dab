# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain --prompt``: VISTA3D's class and point prompts from the command line, on a NIfTI with a
non-trivial affine (network ``vista3d132(encoder_embed_dim=8)``, random weights); the maps equal the Python API's."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import NIFTI_AFFINE, run_cli
from monai.networks.nets import vista3d132

from monai_segcam.cam import Vista3DSegCAM, parse_prompt

ARGS = {"encoder_embed_dim": 8}


@pytest.fixture(scope="module")
def vista_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vista")
    torch.manual_seed(0)
    net = vista3d132(**ARGS).eval()
    torch.save(net.state_dict(), folder / "vista.pt")
    image = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, NIFTI_AFFINE), str(folder / "ct.nii.gz"))
    return folder, net, torch.from_numpy(image)[None, None]


@pytest.mark.parametrize("prompts, classes", [
    (["class:3,5"], [3, 5]),
    (["point:10,12,20", "point:22,18,6:0"], [0]),
])  # fmt: skip
def test_prompts_from_the_command_line(vista_case, prompts, classes):
    folder, net, image = vista_case
    out = folder / f"out_{len(prompts)}"
    args = [arg for p in prompts for arg in ("--prompt", p)]
    result = run_cli("explain", folder / "ct.nii.gz", "--network", "monai.networks.nets.vista3d132", "--network-args",
                     json.dumps(ARGS), "--checkpoint", folder / "vista.pt", "--device", "cpu", "--no-png", "--quiet",
                     "--output", out, *args)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = Vista3DSegCAM(net)(image, **parse_prompt(prompts)).map[0].numpy()  # the file's grid is the network's
    for k, c in enumerate(classes):
        saved = nib.load(str(out / "ct" / f"ct_cam_hirescam_pre_head_class{c}.nii.gz"))
        assert saved.shape == (32, 32, 32) and np.allclose(saved.affine, NIFTI_AFFINE)
        assert float(expected[k].max()) > 0
        np.testing.assert_allclose(np.asarray(saved.dataobj), expected[k], rtol=1e-4, atol=1e-5 * expected[k].max())


def test_bad_prompt_is_refused(vista_case):
    folder, _, _ = vista_case
    result = run_cli("explain", folder / "ct.nii.gz", "--network", "monai.networks.nets.vista3d132", "--network-args",
                     json.dumps(ARGS), "--checkpoint", folder / "vista.pt", "--device", "cpu", "--output",
                     folder / "bad", "--prompt", "organ:3")  # fmt: skip
    assert result.returncode != 0 and "class:N[,M]" in result.stderr
