# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Multi-label (sigmoid) networks on the command line: ``--multi-label``, or detected from a bundle whose
postprocessing applies a sigmoid (BraTS-style bundles); the segmentation keeps one channel per class."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import torch
from cli_helpers import NETWORK_ARGS, SHAPE, write_bundle

from monai_segcam import SegCAM
from monai_segcam.cli.model import load_model


def test_multi_label_outputs_equal_the_python_api(cli_runs, cli_data):
    """Per-channel segmentation (logit > 0) and the CAM of each class over its own sigmoid region, as in Python."""
    import nibabel as nib
    from monai.networks.nets import UNet

    result, output = cli_runs["multi_label"]
    assert result.returncode == 0, result.stderr
    case = output / "case_01_T1"
    net = UNet(**NETWORK_ARGS).eval()
    net.load_state_dict(torch.load(cli_data["checkpoint"], weights_only=True)["model"])
    image = torch.as_tensor(np.asarray(nib.load(str(cli_data["nifti"])).dataobj), dtype=torch.float32)[None, None]
    with torch.no_grad():
        logits = net(image)[0]
    seg = np.asarray(nib.load(str(case / "case_01_T1_seg.nii.gz")).dataobj)
    assert seg.shape == (*SHAPE, 3) and seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, np.moveaxis((logits > 0).numpy(), 0, -1))
    assert seg[..., 0].any() and not seg[..., 0].all()  # the test would not tell sigmoid from argmax otherwise
    expected = SegCAM(net, layers="pre_head", method="hirescam", multi_label=True)(image, classes=[0, 2]).map
    for i, c in enumerate((0, 2)):
        saved = np.asarray(nib.load(str(case / f"case_01_T1_cam_hirescam_pre_head_class{c}.nii.gz")).dataobj)
        reference = expected[0, i].numpy()
        np.testing.assert_allclose(saved, reference, rtol=1e-4, atol=1e-6 * max(float(reference.max()), 1e-12))
    summary = json.loads((case / "case_01_T1_segcam.json").read_text(encoding="utf-8"))
    assert summary["model"]["multi_label"] is True
    assert summary["predicted_voxels"] == {str(c): int((logits[c] > 0).sum()) for c in range(3)}


def test_bundle_with_sigmoid_postprocessing_is_multi_label(tmp_path):
    write_bundle(tmp_path / "bundle", unet_state())
    config_path = tmp_path / "bundle" / "configs" / "inference.json"
    args = Namespace(bundle=str(tmp_path / "bundle"), config=["configs/inference.json"], checkpoint=None)
    assert load_model(Namespace(**vars(args), multi_label=False), checkpoint_required=True).multi_label is False
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["postprocessing"] = {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        ],
    }
    config_path.write_text(json.dumps(config), encoding="utf-8")
    assert load_model(Namespace(**vars(args), multi_label=False), checkpoint_required=True).multi_label is True


def unet_state() -> dict:
    from monai.networks.nets import UNet

    return UNet(**NETWORK_ARGS).state_dict()
