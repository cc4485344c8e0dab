# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An nnU-Net v2 model folder through nnU-Net's own code: loading, tiles, prediction, the way back to the file."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is an optional dependency (pip install monai-segcam[nnunet])")

from monai_segcam.nnunet import (
    NNUNetModel,
    NNUNetSegCAM,
    available_folds,
    load_checkpoint,
    nnunet_layer_presets,
    nnunet_window_grid,
)

pytestmark = pytest.mark.slow  # the session fixture trains a tiny nnU-Net (about 30 s)


@pytest.fixture(scope="module")
def model(nnunet_folder):
    return NNUNetModel(nnunet_folder, folds=[0, 1])


@pytest.fixture(scope="module")
def files(nnunet_case):
    return [nnunet_case["image0"], nnunet_case["image1"]]


@pytest.fixture(scope="module")
def case(model, files, nnunet_case):
    return model.preprocess(files, label=nnunet_case["label"])


@pytest.fixture(scope="module")
def logits(model, case):
    return model.predict(case.data).float()


def test_folds_networks_and_mirroring_come_from_the_folder(model, nnunet_folder):
    assert available_folds(nnunet_folder) == [0, 1]
    assert len(model.networks) == 2 and model.mirror_axes == (0, 1, 2)
    assert len(model.flips) == 8 and model.flips[0] == ()
    first, second = (dict(net.named_parameters())["decoder.seg_layers.1.weight"] for net in model.networks)
    assert not torch.equal(first, second)  # each fold has its own weights
    checkpoint = load_checkpoint(nnunet_folder / "fold_1" / "checkpoint_final.pth")
    torch.testing.assert_close(checkpoint["network_weights"]["decoder.seg_layers.1.weight"], second.detach())
    assert model.patch_size == (16, 16, 16) and model.class_names == {0: "background", 1: "ball"}
    assert model.default_classes == [1] and not model.multi_label
    single = NNUNetModel(nnunet_folder, folds=[1], use_mirroring=False)
    assert single.flips == [()] and len(single.networks) == 1


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer", "init_args": argparse.Namespace()}, path)
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_checkpoint(path)
    torch.save({"network_weights": {}}, path)
    with pytest.raises(ValueError, match="lacks"):
        load_checkpoint(path)


def test_model_folder_errors(nnunet_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"plans\.json is missing"):
        NNUNetModel(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"folds with checkpoint_final.pth: \[0, 1\]"):
        NNUNetModel(nnunet_folder, folds=[3])


def test_wrong_number_of_channel_files(model, files):
    with pytest.raises(ValueError, match="expects 2 channel file"):
        model.preprocess(files[:1])


def test_window_grid_is_nnunets(model, case):
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    for spatial in [tuple(case.data.shape[1:]), (10, 40, 5)]:  # the case, and one smaller than the patch in 2 axes
        grid = model.window_grid(spatial)
        padded, slicer = pad_nd_image(torch.zeros((1, *spatial)), model.patch_size, "constant", {"value": 0}, True)
        assert grid.padded_shape == tuple(padded.shape[1:]) and grid.crop[2:] == tuple(slicer[1:])
        nnunet_slicers = model.predictor._internal_get_sliding_window_slicers(padded.shape[1:])
        assert [(slice(None), *w) for w in grid.slices] == list(nnunet_slicers)
    gaussian = compute_gaussian(model.patch_size, 1 / 8, 10, dtype=torch.float16, device=torch.device("cpu"))
    torch.testing.assert_close(grid.importance[0, 0], gaussian.float(), rtol=0, atol=0)
    flat = nnunet_window_grid((16, 16, 16), use_gaussian=False)((20, 16, 16))
    assert torch.equal(flat.importance, torch.ones((1, 1, 16, 16, 16))) and len(flat.slices) == 2


def test_stitched_prediction_matches_the_predictor(model, case, logits):
    """The engine's float32 stitching of the folds, mirrorings and tiles against nnU-Net's own (float16) sums, where
    float16 holds the Gaussian weights (far from every tile centre they are subnormal in nnU-Net's sums)."""
    ours = NNUNetSegCAM(model).engine.predict(case.data[None])[0]
    grid = model.window_grid(case.data.shape[1:])
    weight = grid.count()[grid.crop][0, 0]
    held = weight > 1e-3
    assert held.float().mean() > 0.7
    torch.testing.assert_close(ours[:, held], logits[:, held], rtol=0, atol=2e-2)
    margin = (logits[1] - logits[0]).abs()
    assert torch.equal(ours.argmax(0)[held & (margin > 0.05)], logits.argmax(0)[held & (margin > 0.05)])


def test_maps_go_back_like_nnunet_probabilities(model, case, logits):
    """``to_original`` is nnU-Net's way back: the softmax of the logits taken back equals nnU-Net's exported
    probabilities inside the crop box, and maps are 0 where nnU-Net cropped the case."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    _, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, model.plans_manager, model.configuration_manager, model.label_manager, case.properties, True
    )
    back = model.to_original(logits, case)
    box = tuple(slice(low, high) for low, high in case.properties["bbox_used_for_cropping"])
    ours = torch.softmax(torch.from_numpy(back[(slice(None), *box)]), 0).numpy()
    np.testing.assert_allclose(ours, probabilities[(slice(None), *box)], rtol=0, atol=1e-5)
    outside = np.ones(back.shape[1:], dtype=bool)
    outside[box] = False
    assert outside.any() and not back[:, outside].any()
    assert back.shape[1:] == tuple(case.properties["shape_before_cropping"])


def test_file_voxels_land_on_the_same_anatomy(model, case, nnunet_case):
    """The label's centroid in the file's voxels, mapped onto the preprocessed grid, is the preprocessed label's."""
    import nibabel as nib

    label = np.asarray(nib.load(str(nnunet_case["label"])).dataobj)
    centroid = np.argwhere(label > 0).mean(0)
    mapped = model.file_voxels_to_grid(centroid[None], case)[0]
    expected = np.argwhere(case.label[0].numpy() > 0).mean(0)
    np.testing.assert_allclose(mapped, expected, atol=0.5)


def test_layer_presets_of_nnunet_networks(model):
    presets = nnunet_layer_presets(model.networks[0])
    assert presets == {
        "encoder.0": "encoder.stages.0",
        "encoder.1": "encoder.stages.1",
        "bottleneck": "encoder.stages.2",
        "decoder.0": "decoder.stages.0",
        "decoder.1": "decoder.stages.1",
        "pre_head": "decoder.stages.1",
    }
    assert nnunet_layer_presets(torch.nn.Conv3d(1, 1, 1)) == {}


def test_written_segmentation_equals_the_predictors(model, files, tmp_path):
    """Two folds, mirroring on: the file our path writes is nnU-Net's ``predict_from_files`` output, voxel for
    voxel, with the same geometry; the CAMs share it."""
    import nibabel as nib

    explanation = NNUNetSegCAM(model, layers=["pre_head", "bottleneck"])([str(f) for f in files])
    written = explanation.save(tmp_path / "ours")
    (tmp_path / "nnunet").mkdir()
    model.predictor.predict_from_files_sequential([[str(f) for f in files]], str(tmp_path / "nnunet"), False, True)
    theirs = nib.load(str(tmp_path / "nnunet" / "case.nii.gz"))
    ours = nib.load(str(tmp_path / "ours" / "case_seg.nii.gz"))
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    assert set(np.unique(np.asarray(theirs.dataobj))) == {0, 1}
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    assert sorted(os.path.basename(p) for p in written) == [
        "case_cam_hirescam_bottleneck_class1.nii.gz", "case_cam_hirescam_pre_head_class1.nii.gz", "case_seg.nii.gz"
    ]  # fmt: skip
    cam = nib.load(str(tmp_path / "ours" / "case_cam_hirescam_pre_head_class1.nii.gz"))
    np.testing.assert_allclose(cam.affine, theirs.affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(cam.dataobj), explanation.maps["pre_head"][0], rtol=1e-6)
    assert cam.shape == theirs.shape and np.asarray(cam.dataobj).max() > 0


def test_monai_bundle_converted_from_the_folder(nnunet_folder, files, tmp_path, monkeypatch):
    """A MONAI bundle written by MONAI's ``convert_nnunet_to_monai_bundle`` loads to the same folds and prediction."""
    from monai.apps.nnunet import convert_nnunet_to_monai_bundle

    from monai_segcam.nnunet.model import _numpy_scalar_globals

    monkeypatch.setenv("nnUNet_results", str(nnunet_folder.parents[1]))
    (tmp_path / "models").mkdir()
    with torch.serialization.safe_globals(_numpy_scalar_globals()):  # its weights_only load meets numpy scalars
        for fold in (0, 1):
            convert_nnunet_to_monai_bundle({"dataset_name_or_id": nnunet_folder.parent.name}, str(tmp_path), fold)
    bundle, folder = NNUNetModel(tmp_path), NNUNetModel(nnunet_folder)
    assert bundle.folds == [0, 1] and bundle.checkpoint_name == "model.pt" and bundle.mirror_axes == (0, 1, 2)
    for ours, theirs in zip(bundle.networks, folder.networks):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
    case = bundle.preprocess(files)
    assert torch.equal(bundle.predict(case.data), folder.predict(case.data))
