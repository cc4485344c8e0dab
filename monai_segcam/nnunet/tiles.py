# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""nnU-Net's sliding-window tiles as a :py:class:`~monai_segcam.cam.windows.WindowGrid` factory.

nnU-Net v2 predicts a preprocessed case ``(C, *spatial)`` by padding it with zeros to at least the patch size
(``acvl_utils``' ``pad_nd_image``, the difference split ``d // 2`` before and the rest after), placing tiles at the
positions of ``compute_steps_for_sliding_window`` (step ``tile_step_size`` times the patch, 0.5 by default, spread
evenly so that the last tile ends at the border), weighting each tile's logits by ``compute_gaussian`` (sigma 1/8 of
the patch, computed in float16) and dividing by the summed weights. Every piece here is nnU-Net's own function; the
factory only packs their results into the value the CAM engines stitch with, so that
``SlidingWindowSegCAM(..., window_grid=nnunet_window_grid(patch_size))`` blends with nnU-Net's own weights. The sums
are float32: nnU-Net sums in float16, which moves its logits by about 1e-2 and, far from every tile centre where the
weights are float16 subnormals, by up to 0.5 (a few corner voxels of the image).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from ..cam.windows import GridFactory, WindowGrid
from ._require import require_nnunet

__all__ = ["nnunet_window_grid"]


def nnunet_window_grid(
    patch_size: Sequence[int],
    tile_step_size: float = 0.5,
    use_gaussian: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> GridFactory:
    """A factory ``fn(spatial_shape) -> WindowGrid`` placing nnU-Net v2's tiles on a preprocessed image.

    Args:
        patch_size: the configuration's patch size (``plans.json``, ``configurations[...]["patch_size"]``).
        tile_step_size: the step between tiles as a fraction of the patch, in (0, 1] (nnU-Net's default 0.5).
        use_gaussian: Gaussian blending (nnU-Net's default); ``False`` weighs every tile by 1.
        device: where the importance map lives (the engine moves it where it needs it).
        dtype: the importance map's dtype; its values are nnU-Net's float16 Gaussian (the predictor's weights, whose
            smallest values would otherwise differ by orders of magnitude), the sums are done in ``dtype``.

    Example:
        .. code-block:: python

            grid_of = nnunet_window_grid((128, 128, 128))
            grid = grid_of((150, 300, 280))  # nnU-Net's tiles of a preprocessed case
            sw_cam = SlidingWindowSegCAM(networks, roi_size=(128, 128, 128), window_grid=grid_of, flips=flips)
    """
    sliding = require_nnunet("nnunetv2.inference.sliding_window_prediction")
    padding = require_nnunet("acvl_utils.cropping_and_padding.padding")
    patch = tuple(int(p) for p in patch_size)
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must lie in (0, 1], got {tile_step_size}.")
    if use_gaussian:  # nnU-Net's call and dtype: float16, zeros raised to the smallest value (corners far from the
        # centre underflow), so the blending weights are the predictor's own
        gaussian = sliding.compute_gaussian(patch, 1.0 / 8, 10, dtype=torch.float16, device=torch.device("cpu"))
        importance = gaussian.to(device=device, dtype=dtype)[None, None]
    else:
        importance = torch.ones((1, 1, *patch), dtype=dtype, device=device)

    def grid(spatial_shape: Sequence[int]) -> WindowGrid:
        spatial = tuple(int(s) for s in spatial_shape)
        if len(spatial) != len(patch):
            raise ValueError(f"A {len(patch)}D patch {patch} cannot tile a {len(spatial)}D image {spatial}.")
        # nnU-Net's padding rule, applied to an empty array (no voxel is allocated): the slicer gives the pad
        padded, slicer = padding.pad_nd_image(np.empty((0, *spatial), dtype=bool), patch, "constant", None, True)
        padded_shape = padded.shape[1:]
        pad: list[int] = []
        for crop, size in reversed(list(zip(slicer[1:], padded_shape))):
            pad += [int(crop.start), int(size - crop.stop)]
        steps = sliding.compute_steps_for_sliding_window(padded_shape, patch, tile_step_size)
        slices = [tuple(slice(int(s), int(s) + p) for s, p in zip(start, patch)) for start in itertools.product(*steps)]
        return WindowGrid(spatial, patch, pad, slices, importance, "constant", 0.0)

    return grid
