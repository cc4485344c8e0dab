# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A map in a notebook: :py:func:`show` draws an engine's result over its image, as the three orthogonal planes
through one voxel (matplotlib, :py:func:`~monai_segcam.visualize.plot_orthogonal_slices`) or as an interactive NiiVue
view (``pip install "monai-segcam[notebook]"``, ipyniivue): the image, the map as a colour overlay and the
segmentation as outlines, linked planes with a crosshair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import look_up_option

from .colors import class_colors
from .planes import as_volume
from .slices import plot_orthogonal_slices

__all__ = ["VIEWERS", "show", "niivue_view"]

VIEWERS = ("planes", "niivue")


def show(
    result: Any, image: Any, layer: str | None = None, class_index: int | None = None, viewer: str = "planes",
    **options: Any,
) -> Any:  # fmt: skip
    """Show one map of an engine's result over its image in a notebook.

    Args:
        result: what an engine returns (a :py:class:`~monai_segcam.CAMResult`: ``{layer: (B, n_classes, *spatial)}``
            with ``classes``, ``region``, ``prediction``, ``method``), or a mapping ``{layer: map}``; the first item of
            the batch is shown.
        image: the engine's input ``(B, C, *spatial)`` (or ``(C, *spatial)``, ``(*spatial)``); its first channel is
            the background. A ``MetaTensor`` gives the voxel spacing (and NiiVue the world geometry).
        layer: the layer shown (default: the first).
        class_index: the class shown (default: the first explained class).
        viewer: ``"planes"``: a matplotlib figure of the axial, coronal and sagittal planes through the map's peak,
            the explained region outlined; ``"niivue"``: an interactive ipyniivue widget, the segmentation (the
            result's prediction, else its region) drawn as outlines.
        options: passed to :py:func:`~monai_segcam.visualize.plot_orthogonal_slices` (``"planes"``, e.g.
            ``center``, ``cmap``, ``alpha``) or to :py:func:`niivue_view` (``"niivue"``, e.g. ``height``).

    Returns:
        a ``matplotlib.figure.Figure`` (a notebook shows it) or an ``ipyniivue.NiiVue`` widget.

    Raises:
        ValueError: an unknown layer, class or viewer.
        ImportError: ``viewer="niivue"`` without ipyniivue (the message says what to install).

    Example:
        .. code-block:: python

            result = SegCAM(net, layers="pre_head")(image, classes=1)
            monai_segcam.show(result, image)  # the planes through the peak
            monai_segcam.show(result, image, viewer="niivue")  # interactive
    """
    viewer = look_up_option(viewer, VIEWERS)
    layer, c, j = _choose(result, layer, class_index)
    cam = _item(result[layer])[j]
    background = _item(image)[0]
    title = f"{getattr(result, 'method', 'cam')} {layer} class {c}"
    region = getattr(result, "region", None)
    region = None if region is None else _item(region)[j] > 0
    if viewer == "planes":
        return plot_orthogonal_slices(background, cam, region=region, title=title, **options)
    return niivue_view(background, cam, _segmentation(result, region), title=title, **options)


def niivue_view(
    image: Any, cam: Any, segmentation: Any = None, title: str = "cam", height: int = 400, opacity: float = 0.5,
    colormap: str = "warm", outline: float = 1.0,
) -> Any:  # fmt: skip
    """An ipyniivue widget: ``image`` ``(X, Y, Z)`` in grey, ``cam`` (same grid) as a colour overlay from 0 to its
    maximum, and a label map ``segmentation`` as outlines ``outline`` voxels wide, coloured by class
    (:py:func:`~monai_segcam.visualize.colors.class_colors`), in linked multiplanar views.

    Example:
        .. code-block:: python

            niivue_view(image[0, 0], result["pre_head"][0, 0], segmentation=labels)  # shown by the notebook
    """
    try:
        from ipyniivue import NiiVue, Volume
        from ipyniivue.traits import LUT
    except ImportError as exc:
        raise ImportError('the interactive view needs ipyniivue: pip install "monai-segcam[notebook]"') from exc
    affine = _affine(image, cam)
    grey, heat = as_volume(image, "image"), as_volume(cam, "cam")
    top = float(np.nanmax(heat)) if heat.size and np.nanmax(heat) > 0 else 1.0
    volumes = [
        Volume(data=_nifti(grey, affine), name="image.nii", colormap="gray"),
        Volume(data=_nifti(heat, affine), name=f"{title}.nii", colormap=colormap, opacity=opacity, cal_min=0.0,
               cal_max=top),
    ]  # fmt: skip
    if segmentation is not None:
        labels = np.rint(as_volume(segmentation, "segmentation")).astype(np.int16)
        classes = list(range(int(labels.max(initial=0)) + 1))
        lut = LUT(lut=[v for c in classes for v in class_colors(classes)[c]], min=0.0, max=float(classes[-1]),
                  labels=["background", *(f"class {c}" for c in classes[1:])])  # fmt: skip
        volumes.append(Volume(data=_nifti(labels, affine), name="segmentation.nii", colormap_label=lut))
    viewer = NiiVue(height=height, atlas_outline=outline, is_colorbar=True)
    viewer.load_volumes(volumes)
    return viewer


def _choose(result: Any, layer: str | None, class_index: int | None) -> tuple[str, int, int]:
    """The layer, the class and its channel in the maps."""
    if not isinstance(result, Mapping) or not result:
        raise ValueError(f"show needs an engine's result ({{layer: map}}), got {type(result).__name__}")
    layers = list(result)
    layer = layers[0] if layer is None else look_up_option(layer, layers)
    classes = list(getattr(result, "classes", None) or range(result[layer].shape[1]))
    c = classes[0] if class_index is None else int(class_index)
    if c not in classes:
        raise ValueError(f"class {c} was not explained: this result has classes {classes}")
    return layer, c, classes.index(c)


def _item(value: Any) -> Any:
    """The first batch item ``(C, *spatial)`` of ``(B, C, *spatial)`` (smaller inputs get their missing dims)."""
    while value.ndim < 5:
        value = value[None]
    return value[0]


def _segmentation(result: Any, region: Any) -> Any:
    """The label map to outline: the result's prediction (logits: argmax; a label map as it is), else the region."""
    prediction = getattr(result, "prediction", None)
    if prediction is None:
        return None if region is None else region.to(torch.int16) if isinstance(region, torch.Tensor) else region
    item = _item(prediction)
    return item.argmax(0) if item.shape[0] > 1 else item[0]


def _affine(*sources: Any) -> np.ndarray:
    """The voxel-to-world (RAS) affine of the first ``MetaTensor`` of ``sources``, else the identity."""
    for source in sources:
        if isinstance(source, MetaTensor):
            affine = source.affine
            return np.asarray(affine[0] if affine.ndim == 3 else affine, dtype=np.float64)
    return np.eye(4)


def _nifti(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """An uncompressed NIfTI file's bytes (NiiVue reads them by the ``.nii`` name)."""
    import nibabel as nib

    data = volume if volume.dtype == np.int16 else volume.astype(np.float32)
    return bytes(nib.Nifti1Image(np.ascontiguousarray(data), affine).to_bytes())
