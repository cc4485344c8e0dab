# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai_segcam.show``: an engine's result over its image as the orthogonal planes (the picture checked against the
map's own planes through its peak) and as an ipyniivue widget, checked by its state without a browser (the volumes
it sends: the image, the map and the segmentation with their geometry, colour ranges and outlines)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet

import monai_segcam
from monai_segcam.visualize import extract_plane, figure_to_array, find_center
from monai_segcam.visualize.colors import class_colors
from monai_segcam.visualize.planes import DisplayOrientation

AFFINE = torch.tensor([[0.0, -0.8, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def explained():
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).eval()
    volume = torch.randn(1, 1, 16, 12, 8) * 0.2
    volume[..., 4:10, 3:9, 2:6] += 2.0
    image = MetaTensor(volume, affine=AFFINE)
    result = monai_segcam.SegCAM(net, layers=["bottleneck", "pre_head"], method="hirescam")(image, classes=[1, 2])
    return result, image


def test_planes_draw_the_map_through_its_peak(explained):
    result, image = explained
    figure = monai_segcam.show(result, image, layer="pre_head", class_index=2)
    cam = result["pre_head"][0, 1].numpy()
    peak = find_center(cam)
    assert figure.axes[0].get_title() == f"axial z={peak[2]}"
    orientation = DisplayOrientation.of(AFFINE, cam.shape)  # the one display convention: the affine's RAS order
    shown, grey = orientation.to_display(cam), orientation.to_display(image[0, 0].numpy())
    for axis, view, index in zip(figure.axes[:3], ("axial", "coronal", "sagittal"), orientation.to_display_voxel(peak)[::-1]):
        background, overlay = axis.images[0].get_array(), axis.images[1].get_array()
        np.testing.assert_array_equal(overlay, extract_plane(shown, view, index))
        np.testing.assert_array_equal(background, extract_plane(grey, view, index))
    assert figure._suptitle.get_text() == "hirescam pre_head class 2"
    assert axis.get_aspect() == pytest.approx(2.5 / 1.2)  # the sagittal plane's spacing from the affine (S, A)
    assert figure_to_array(figure).shape[-1] in (3, 4)  # it renders
    with pytest.raises(ValueError, match=r"class 3 was not explained: this result has classes \[1, 2\]"):
        monai_segcam.show(result, image, class_index=3)


def test_niivue_widget_state(explained):
    pytest.importorskip("ipyniivue")
    result, image = explained
    widget = monai_segcam.show(result, image, viewer="niivue", height=300)
    assert widget.height == 300 and widget.opts.atlas_outline > 0  # label volumes drawn as outlines
    grey, heat, labels = widget.volumes
    cam = result["bottleneck"][0, 0].numpy()
    for volume, expected in ((grey, image[0, 0].numpy()), (heat, cam)):
        nifti = nib.Nifti1Image.from_bytes(volume.data)
        np.testing.assert_allclose(nifti.affine, AFFINE.numpy())
        np.testing.assert_array_equal(np.asarray(nifti.dataobj), expected)
    assert (grey.colormap, heat.name) == ("gray", "hirescam bottleneck class 1.nii")
    assert (heat.cal_min, heat.cal_max, heat.opacity) == (0.0, pytest.approx(float(cam.max())), 0.5)
    segmentation = np.asarray(nib.Nifti1Image.from_bytes(labels.data).dataobj)
    np.testing.assert_array_equal(segmentation, result.prediction[0].argmax(0).numpy())
    assert 0 < (segmentation > 0).sum() < segmentation.size
    lut = labels.colormap_label
    classes = list(range(int(lut.max) + 1))
    assert classes == list(range(int(segmentation.max()) + 1)) and len(lut.labels) == len(classes)
    assert lut.lut == [v for c in classes for v in class_colors(classes)[c]]


def test_unknown_viewer_and_layer(explained):
    result, image = explained
    with pytest.raises(ValueError, match="niivue"):
        monai_segcam.show(result, image, viewer="slicer")
    with pytest.raises(ValueError, match="bottleneck"):
        monai_segcam.show(result, image, layer="decoder.9")
