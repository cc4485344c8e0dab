# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_segcam.data import make_phantom, phantom_affine, write_phantom_dataset

SHAPE = (64, 64, 48)


def test_same_seed_same_volume():
    image_a, label_a = make_phantom(SHAPE, seed=7)
    image_b, label_b = make_phantom(SHAPE, seed=7)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)


def test_different_seed_different_volume():
    image_a, label_a = make_phantom(SHAPE, seed=1)
    image_b, label_b = make_phantom(SHAPE, seed=2)
    assert not np.array_equal(image_a, image_b)
    assert not np.array_equal(label_a, label_b)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [SHAPE, (80, 80, 56)])
def test_classes_and_components(shape, seed):
    image, label = make_phantom(shape, seed=seed)
    assert image.shape == label.shape == shape
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2}
    assert ndimage.label(label == 1)[1] == 1
    components, num = ndimage.label(label == 2)
    assert num == 2
    sizes = ndimage.sum_labels(label == 2, components, index=[1, 2])
    assert sizes.min() > 0.5 * sizes.max()  # two kidney-like blobs of similar size
    assert (label == 1).sum() > 5 * (label == 2).sum()  # organ 1 is the large one


def test_intensities_overlap_but_differ():
    image, label = make_phantom(SHAPE, seed=3)
    tissue = image[(image > -500) & (label == 0)]
    organ_1, organ_2 = image[label == 1], image[label == 2]
    # no threshold separates the classes: neighbouring classes' 10-90 % ranges overlap ...
    for lower, upper in ((tissue, organ_1), (organ_1, organ_2)):
        assert np.percentile(upper, 10) < np.percentile(lower, 90)
        # ... but their typical values differ
        assert np.median(upper) - np.median(lower) > 20


def test_written_dataset(tmp_path):
    spacing = (1.5, 1.5, 2.0)
    datalist = write_phantom_dataset(tmp_path, num=2, shape=SHAPE, seed=10, spacing=spacing)
    assert [sorted(item) for item in datalist] == [["image", "label"]] * 2
    expected_affine = phantom_affine(SHAPE, spacing)
    assert not np.allclose(expected_affine, np.eye(4))
    np.testing.assert_allclose(np.abs(np.diag(expected_affine))[:3], spacing)
    assert nib.aff2axcodes(expected_affine) == ("L", "P", "S")
    for i, item in enumerate(datalist):
        image_nii, label_nii = nib.load(item["image"]), nib.load(item["label"])
        for nii in (image_nii, label_nii):
            np.testing.assert_allclose(nii.affine, expected_affine, atol=1e-5)
            assert nii.shape == SHAPE
        assert image_nii.get_data_dtype() == np.int16
        image, label = make_phantom(SHAPE, seed=10 + i)
        np.testing.assert_array_equal(np.asanyarray(image_nii.dataobj), image)
        np.testing.assert_array_equal(np.asanyarray(label_nii.dataobj), label)


def test_existing_files_are_kept(tmp_path):
    first = write_phantom_dataset(tmp_path, num=1, shape=SHAPE, seed=0)
    mtime = (tmp_path / "image000.nii.gz").stat().st_mtime_ns
    assert write_phantom_dataset(tmp_path, num=1, shape=SHAPE, seed=0) == first
    assert (tmp_path / "image000.nii.gz").stat().st_mtime_ns == mtime
    write_phantom_dataset(tmp_path, num=1, shape=SHAPE, seed=5, overwrite=True)
    image, _ = make_phantom(SHAPE, seed=5)
    np.testing.assert_array_equal(np.asanyarray(nib.load(first[0]["image"]).dataobj), image)


def test_invalid_shape():
    with pytest.raises(ValueError):
        make_phantom((32, 32))
