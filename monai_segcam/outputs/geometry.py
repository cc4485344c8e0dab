# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The geometry a CAM is written with: never an identity affine standing in for a geometry the network input lost,
and never silently another grid than the prediction's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = ["check_cam_geometry", "region_on_grid"]


def check_cam_geometry(
    cam: MetaTensor, prediction: Any = None, source_key: str | None = None, cam_keys: Sequence[str] = ()
) -> str:
    """Check the geometry of a CAM ``(n, *spatial)`` about to be written.

    Args:
        cam: the map as it is to be written.
        prediction: the case's prediction as the pipeline writes it (e.g. after ``Invertd``), to compare grids.
        source_key: the loaded key that gives the case its source file when the network input has no source-file
            metadata of its own (several loaded images concatenated by a bundle), else ``None``.
        cam_keys: the CAM's output keys, named in the messages.

    Returns:
        ``""``, or a message when the CAM's grid has another shape than ``prediction``'s (the CAM is then written
        on its own grid, e.g. the network input's, with that grid's true affine: say so once).

    Raises:
        ValueError: when the CAM has no source-file metadata while the case comes from ``source_key``: its affine
            would be an identity taken from a metadata-less array. The message names the override to set.

    Example:
        .. code-block:: python

            note = check_cam_geometry(item["cam"], prediction=item["pred"])
            if note:
                logger.warning(note)
    """
    if source_key is not None and not cam.meta.get("filename_or_obj"):
        raise ValueError(
            "Refusing to write a CAM without its geometry: the network input has no source-file metadata (it is not "
            "a loaded image, e.g. several loaded images concatenated), so the CAM would get an identity affine on the "
            "network grid. Invert it like the bundle inverts its prediction: set the overlay's cam_orig_key to the "
            f"key the bundle's Invertd inverts to (e.g. --cam_orig_key {source_key}), or add {list(cam_keys)} to an "
            f"Invertd with orig_keys={source_key!r}."
        )
    if not isinstance(prediction, torch.Tensor) or prediction.ndim != cam.ndim:
        return ""
    if tuple(prediction.shape[1:]) == tuple(cam.shape[1:]):
        return ""
    return (
        f"the CAMs are written on a {tuple(cam.shape[1:])} grid with its own affine, the prediction on a "
        f"{tuple(prediction.shape[1:])} grid: add {list(cam_keys)} to the keys of the postprocessing's Invertd to "
        "write them where the prediction lands."
    )


def region_on_grid(region: Any, affine: Any, target_affine: Any, target_shape: Sequence[int]) -> np.ndarray:
    """The explained region ``(n, *spatial)`` (non-zero inside) on the grid of ``affine``, taken onto the grid
    ``target_shape`` / ``target_affine`` by nearest-neighbour resampling through both affines (the region every
    front door draws in its pictures on the input file's grid, so that they draw the same contour).

    Example:
        >>> region = np.zeros((1, 4, 4, 4), bool); region[0, :2] = True
        >>> region_on_grid(region, np.diag([2.0, 2.0, 2.0, 1.0]), np.eye(4), (8, 8, 8))[0, :, 0, 0].tolist()
        [True, True, True, False, False, False, False, False]
    """
    from monai.transforms import SpatialResample

    values = torch.as_tensor(np.asarray(torch.as_tensor(region).detach().cpu()) != 0, dtype=torch.float32)
    source = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    target = torch.as_tensor(np.asarray(target_affine, dtype=np.float64))
    shape = tuple(int(s) for s in target_shape)
    if tuple(values.shape[1:]) == shape and torch.allclose(source, target, atol=1e-5):
        return values.numpy() > 0.5
    resample = SpatialResample(mode="nearest", padding_mode="zeros", dtype=np.float64)
    moved = resample(MetaTensor(values, affine=source), dst_affine=target, spatial_size=shape)
    return np.asarray(torch.as_tensor(moved).cpu().numpy()) > 0.5
