# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What the handlers' pictures (PNG files, TensorBoard images) of a computed case are drawn from: the maps on the
input file's own grid when the postprocessing took them there (e.g. ``Invertd``), over the file's image as read and
the explained region taken onto that grid, as the command line and :py:func:`~monai_segcam.outputs.write_case_folder`
draw them; else the network-grid maps over the network input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ..files.reading import read_image
from ..outputs import region_on_grid
from .compute import CAMCase, output_item

__all__ = ["CasePicture", "case_picture"]


@dataclass
class CasePicture:
    """The inputs of one case's pictures, on one grid: the background ``image`` ``(*spatial)``, the ``maps`` per
    layer ``(n_classes, *spatial)``, the explained ``regions`` ``(n_classes, *spatial)`` and the grid's ``affine``.

    Example:
        .. code-block:: python

            picture = case_picture(case, engine.state.output, {"pre_head": "cam"})
            plot_orthogonal_slices(picture.image, picture.maps["pre_head"][0], affine=picture.affine)
    """

    image: Any
    maps: dict[str, Any]
    regions: Any
    affine: np.ndarray


def case_picture(case: CAMCase, output: Any, output_keys: dict[str, str]) -> CasePicture:
    """The picture inputs of ``case`` whose postprocessed engine ``output`` holds its maps under ``output_keys``
    (layer -> key): on the input file's grid when every postprocessed map is a ``MetaTensor`` on another grid than
    the network input's and its source file reads to that grid, else on the network grid.

    Example:
        .. code-block:: python

            picture = case_picture(case, engine.state.output, compute.output_keys)
            writer.write(case.name, method, saved, classes, picture.affine, picture.image, picture.regions,
                         shown=picture.maps)
    """
    assert case.image is not None  # a computed case
    network = CasePicture(case.image[0], dict(case.cams), case.region, _affine(case.image))
    posts = {layer: output_item(output, case.index, key) for layer, key in output_keys.items()}
    if not posts or not all(isinstance(post, MetaTensor) for post in posts.values()):
        return network
    first = next(iter(posts.values()))
    shape, affine = tuple(first.shape[1:]), _affine(first)
    if shape == tuple(case.image.shape[1:]) and np.allclose(affine, network.affine, atol=1e-4):
        return network
    source = first.meta.get("filename_or_obj")
    try:
        image = read_image(source)[0] if isinstance(source, str) and source else None
    except (OSError, ValueError):
        image = None
    if image is None or tuple(image.shape) != shape:
        return network
    regions = None if case.region is None else region_on_grid(case.region, network.affine, affine, shape)
    return CasePicture(image, dict(posts), regions, affine)


def _affine(volume: Any) -> np.ndarray:
    affine = volume.affine if isinstance(volume, MetaTensor) else torch.eye(4)
    return np.asarray(torch.as_tensor(affine).detach().cpu().numpy(), dtype=np.float64)
