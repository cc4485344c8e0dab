# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Occlusion sensitivity of a segmentation's region score: :py:class:`SegOcclusion`, fast and exact with windows.

For each occluder ``p`` (a box of ``mask_size`` voxels on a grid of step ``stride``, set to a baseline), the drop of
the explained region's score ``S(x) - S(x_p)``, with ``S`` the region score of the *stitched* prediction (see
:py:mod:`monai_segcam.perturbation.scoring`); the map at voxel ``v`` is the mean drop of the occluders covering
``v``. An occluded image re-runs only the windows that see the occluder and touch the region, several occluded
windows per forward pass; the others keep their clean contribution, so the result equals MONAI's
``sliding_window_inference`` run on every occluded image, to float tolerance.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from ..cam.result import CAMResult, as_image_map
from ..cam.windows import window_index
from ..utils.baselines import make_baseline
from .base import Prepared, StitchedExplainer
from .scoring import Perturbation
from .windows import box_footprint

__all__ = ["SegOcclusion", "occluder_boxes"]

LAYER_KEY = "input"
METHOD = "occlusion"


def occluder_boxes(
    spatial_shape: Sequence[int], mask_size: Sequence[int] | int, stride: Sequence[int] | int | None = None
) -> list[tuple[slice, ...]]:
    """The occluder grid: boxes of ``mask_size`` (clipped to the image) every ``stride`` voxels from 0, plus a last
    box of each axis flush with the image's end (as MONAI's ``dense_patch_slices`` places windows). With ``stride``
    up to ``mask_size`` every voxel is covered; a larger stride leaves gaps (their map values are 0).

    Example:
        .. code-block:: python

            len(occluder_boxes((40, 40, 40), 16, 16))  # 27 boxes: starts 0, 16, 24 per axis
    """
    spatial = tuple(int(s) for s in spatial_shape)
    size = tuple(min(int(m), s) for m, s in zip(ensure_tuple_rep(mask_size, len(spatial)), spatial))
    step = size if stride is None else tuple(int(s) for s in ensure_tuple_rep(stride, len(spatial)))
    if any(m < 1 for m in size) or any(s < 1 for s in step):
        raise ValueError(f"mask_size and stride must be positive, got {mask_size} and {stride}.")
    starts = []
    for s, m, t in zip(spatial, size, step):
        axis = list(range(0, s - m + 1, t))
        starts.append(axis if axis[-1] == s - m else [*axis, s - m])
    return [tuple(slice(a, a + m) for a, m in zip(corner, size)) for corner in itertools.product(*starts)]


class SegOcclusion(StitchedExplainer[CAMResult]):
    """Occlusion maps of a segmentation network's region score, on whole volumes or with MONAI's sliding windows.

    Called like the CAM engines; returns a :py:class:`~monai_segcam.cam.result.CAMResult` with one layer key,
    ``"input"``, and method ``"occlusion"``: maps ``(B, n_classes, *spatial)`` on the image's voxel grid carrying its
    metadata, so they are saved like CAMs. Inference runs without gradients, in ``eval()`` mode, with the network's
    state restored afterwards.

    Args:
        network: the segmentation network, or several (an ensemble whose logits are averaged).
        roi_size: the window size; ``None`` explains whole volumes (one forward pass per batch of occluded images).
        mask_size: the occluder's size in voxels (one value or one per axis; clipped to the image).
        stride: the step of the occluder grid; defaults to ``mask_size`` (non-overlapping occluders).
        baseline: what occluded voxels become: a number, ``"mean"`` (the image's mean per channel) or ``"blur"``.
        blur_sigma: the Gaussian sigma (voxels) of the ``"blur"`` baseline.
        batch_size: occluded windows (or whole occluded images) per forward pass.
        relu: keep positive drops only (like the CAMs' ReLU). Defaults to True; ``False`` keeps signed drops.
        window_kwargs: the sliding-window and target settings of
            :py:class:`~monai_segcam.perturbation.base.StitchedExplainer` (``sw_batch_size``, ``overlap``, ``mode``,
            ``sigma_scale``, ``padding_mode``, ``cval``, ``sw_device``, ``device``, ``target``, ``multi_label``,
            ``output_selector``, ``logits_budget``, ``progress``, ``cpu_thresh``, ``flips``, ``window_grid``, ``amp``).

    Attributes:
        window_passes: the windows (or whole images) run through the network by the last call.

    Example:
        .. code-block:: python

            occlusion = SegOcclusion(net, roi_size=(96, 96, 96), mask_size=16, baseline="blur", batch_size=8)
            result = occlusion(image, classes=[1, 2], region="pred")
            result["input"].shape  # (B, 2, *spatial); result.method == "occlusion"
            occlusion = SegOcclusion.from_inferer(bundle_inferer, net, mask_size=16)  # the bundle's windows
    """

    def __init__(
        self,
        network: nn.Module,
        roi_size: Sequence[int] | int | None = None,
        mask_size: Sequence[int] | int = 16,
        stride: Sequence[int] | int | None = None,
        baseline: float | str = 0.0,
        blur_sigma: float = 5.0,
        batch_size: int = 8,
        relu: bool = True,
        **window_kwargs: Any,
    ) -> None:
        super().__init__(network, roi_size, **window_kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        occluder_boxes((1,) * 3, mask_size, stride)  # checks the values
        make_baseline(torch.zeros(1, 1, 1), baseline, blur_sigma)  # checks the baseline
        self.mask_size, self.stride = mask_size, stride
        self.baseline, self.blur_sigma = baseline, blur_sigma
        self.batch_size = batch_size
        self.relu = relu

    @property
    def method_name(self) -> str:
        """``"occlusion"``."""
        return METHOD

    def settings(self) -> dict[str, Any]:
        """The stitched explainer's settings and the occluders'."""
        occluders = {"mask_size": self.mask_size, "stride": self.stride, "baseline": self.baseline,
                     "batch_size": self.batch_size}  # fmt: skip
        return {**super().settings(), **occluders}

    def _explain(self, state: Prepared) -> CAMResult:
        """Occlusion maps of the prepared call (one occluded pass per occluder and batch item, windows re-run only
        where they change)."""
        x, scorer, image = state.x, state.scorer, state.image
        base = scorer.grid.pad_image(make_baseline(x, self.baseline, self.blur_sigma))
        boxes = occluder_boxes(x.shape[2:], self.mask_size, self.stride)
        footprints = [box_footprint(box, scorer.grid) for box in boxes]
        occluders = [Perturbation(b, axes) for b in range(x.shape[0]) for axes in footprints]
        drops = scorer.drops(occluders, base, self.batch_size)
        maps = x.new_zeros((x.shape[0], len(state.classes), *x.shape[2:]))
        count = x.new_zeros(x.shape[2:])
        for box in boxes:
            count[box] += 1
        for p, occluder in enumerate(occluders):
            at = window_index(boxes[p % len(boxes)], occluder.item, slice(None))
            maps[at] += drops[p].view(-1, *[1] * len(boxes[0]))
        maps = maps / count.clamp_min(1)  # voxels no occluder covers (stride > mask_size) stay 0
        wrapped = as_image_map((maps.relu() if self.relu else maps).to(image.device), image)
        prediction = None if state.prediction is None else state.prediction.to(image.device)
        return CAMResult({LAYER_KEY: wrapped}, state.classes, METHOD, state.weights.to(image.device), prediction)
