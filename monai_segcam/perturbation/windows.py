# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""MONAI's sliding-window layout of one image, and where a perturbed box of the image lands in the padded grid.

:py:class:`WindowLayout` holds exactly what :py:func:`monai.inferers.sliding_window_inference` computes for an image
shape: the padding of images smaller than the window, the window slices in the padded grid, the importance map of one
window (all from :py:class:`monai_segcam.cam.windows.WindowGrid`) and the count
map (the sum of the importance maps), so that ``beta_w = importance / count`` are the blending weights of
``Y = sum_w beta_w f_w``. A whole volume is the layout whose single window is the image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.utils import BlendMode, PytorchPadMode, ensure_tuple_rep, fall_back_tuple, look_up_option

from ..cam.windows import WindowGrid

__all__ = ["WindowLayout", "box_footprint", "footprint_mask"]


@dataclass
class WindowLayout:
    """MONAI's windows for one image shape.

    Attributes:
        spatial_shape: the image's spatial shape.
        padded_shape: the padded grid (each side at least the window's).
        pad: the ``F.pad`` list that pads the image to ``padded_shape`` (last dimension first, as MONAI).
        slices: window slices in the padded grid, in MONAI's order.
        importance: the importance map of one window ``(1, 1, *roi)`` (on the window device).
        count: the sum of the windows' importance maps ``(1, 1, *padded_shape)`` (on the stitching device).

    Example:
        .. code-block:: python

            layout = WindowLayout.from_monai((40, 40, 40), (32, 32, 32), overlap=0.25, mode="gaussian")
            len(layout.slices), layout.beta(0).shape  # 8 windows, (1, 1, 32, 32, 32)
    """

    spatial_shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    pad: list[int]
    slices: list[tuple[slice, ...]]
    importance: torch.Tensor
    count: torch.Tensor

    @classmethod
    def from_monai(
        cls,
        spatial_shape: Sequence[int],
        roi_size: Sequence[int] | int | None,
        overlap: Sequence[float] | float = 0.25,
        mode: str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> WindowLayout:
        """The layout of ``sliding_window_inference`` with these settings; ``roi_size=None`` (or non-positive
        components) takes the image size, i.e. one window: the whole volume."""
        spatial = tuple(int(s) for s in spatial_shape)
        roi = spatial if roi_size is None else tuple(fall_back_tuple(roi_size, spatial))
        overlap = ensure_tuple_rep(overlap, len(spatial))
        if any(not 0 <= o < 1 for o in overlap):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        grid = WindowGrid.from_monai(spatial, roi, overlap, mode, sigma_scale, device=sw_device, dtype=dtype)
        count = grid.count(device).to(dtype)
        return cls(spatial, grid.padded_shape, grid.pad, grid.slices, grid.importance, count)

    @property
    def pad_before(self) -> tuple[int, ...]:
        """The padding before the image in each spatial dimension."""
        n = len(self.spatial_shape)
        return tuple(self.pad[2 * (n - 1 - d)] for d in range(n))

    @property
    def crop(self) -> tuple[slice, ...]:
        """``(..., *slices)`` selecting the image inside the padded grid of a ``(B, C, *padded)`` tensor."""
        return (slice(None), slice(None), *(slice(p, p + s) for p, s in zip(self.pad_before, self.spatial_shape)))

    def pad_image(self, image: torch.Tensor, padding_mode: str = "constant", cval: float = 0.0) -> torch.Tensor:
        """``image`` ``(B, C, *spatial)`` padded as MONAI pads it (unchanged when no padding is needed)."""
        if not any(self.pad):
            return image
        mode = look_up_option(padding_mode, PytorchPadMode)
        return F.pad(image, self.pad, mode=mode, value=cval if mode == PytorchPadMode.CONSTANT else None)

    def beta(self, index: int) -> torch.Tensor:
        """The blending weights ``importance / count`` of window ``index`` ``(1, 1, *roi)`` on the window device."""
        count = self.count[(slice(None), slice(None), *self.slices[index])].to(self.importance.device)
        return self.importance / count


def box_footprint(
    box: Sequence[slice], layout: WindowLayout, padding_mode: str = PytorchPadMode.CONSTANT
) -> list[torch.Tensor]:
    """Per spatial axis, which voxels of the padded grid take their value from ``box`` (image voxel slices).

    Padding is a gather applied axis by axis, so the voxels of ``pad(image)`` that come from a box of the image are
    an outer product of one boolean line per axis: the box's line padded like the image (zeros for constant
    padding, mirrored/replicated/wrapped copies otherwise). Perturbing the box changes exactly these voxels.

    Example:
        .. code-block:: python

            axes = box_footprint((slice(0, 8),) * 3, layout)
            touched = [k for k, w in enumerate(layout.slices) if all(a[s].any() for a, s in zip(axes, w))]
    """
    mode = look_up_option(padding_mode, PytorchPadMode)
    axes = []
    n = len(layout.spatial_shape)
    for d, (size, part) in enumerate(zip(layout.spatial_shape, box)):
        line = torch.zeros((1, 1, size))
        line[..., part] = 1.0
        before, after = layout.pad[2 * (n - 1 - d)], layout.pad[2 * (n - 1 - d) + 1]
        if before or after:
            line = F.pad(line, [before, after], mode=mode, value=0.0 if mode == PytorchPadMode.CONSTANT else None)
        axes.append(line[0, 0] > 0.5)
    return axes


def footprint_mask(axes: Sequence[torch.Tensor], window: Sequence[slice]) -> torch.Tensor | None:
    """The footprint inside ``window`` as a boolean ``(*roi)`` mask, or ``None`` when they do not meet.

    Example:
        .. code-block:: python

            mask = footprint_mask(box_footprint(box, layout), layout.slices[0])  # None, or (*roi) booleans
    """
    parts = [a[s] for a, s in zip(axes, window)]
    if not all(bool(p.any()) for p in parts):
        return None
    n = len(parts)
    shaped = [p.view(*[-1 if d == i else 1 for d in range(n)]) for i, p in enumerate(parts)]
    return functools.reduce(torch.logical_and, shaped)
