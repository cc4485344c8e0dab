# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The window grid of a sliding-window pass: positions, padding and blending weights, as one value.

:py:class:`WindowGrid` is the functional core shared by everything that stitches windows (the CAM engines, the
stitched prediction, occlusion): the padded image size and the pad/crop between image and padded grid, the window
slices in the padded grid, the importance map of one window and the count map (the sum of the importance maps), so
that the stitched output is ``Y = sum_w importance * f_w / count`` exactly as MONAI's
:py:func:`~monai.inferers.sliding_window_inference` computes it. :py:meth:`WindowGrid.from_monai` reproduces MONAI's
grid; another scheme (nnU-Net's tiles) is another factory returning the same value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.utils import BlendMode, PytorchPadMode, ensure_tuple_rep, fall_back_tuple, look_up_option

__all__ = ["WindowGrid", "GridFactory", "window_slices", "inferer_window_settings"]


def window_slices(
    spatial_shape: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> tuple[tuple[int, ...], list[tuple[slice, ...]]]:
    """MONAI's window grid: the padded image size and the window slices (``dense_patch_slices``).

    The scan interval is ``int(roi * (1 - overlap))`` (at least 1), or the whole size when the window covers the
    dimension, exactly as in :py:func:`monai.inferers.sliding_window_inference`.

    Example:
        .. code-block:: python

            padded_size, slices = window_slices((192, 192, 160), (96, 96, 96), (0.25, 0.25, 0.25))  # 27 windows
    """
    image_size = tuple(max(s, r) for s, r in zip(spatial_shape, roi_size))
    interval = tuple(
        r if r == s else max(int(r * (1 - o)), 1) for s, r, o in zip(image_size, roi_size, overlap)
    )  # fmt: skip
    return image_size, dense_patch_slices(image_size, roi_size, interval, return_slice=True)


@dataclass
class WindowGrid:
    """Where the windows of one image lie and how their outputs are blended.

    Attributes:
        spatial_shape: the image's spatial shape.
        roi_size: the window size.
        pad: the ``torch.nn.functional.pad`` argument from the image to the padded grid (last dimension first).
        slices: the windows' slices in the padded grid (spatial dimensions only).
        importance: the blending weight of one window ``(1, 1, *roi_size)``.
        padding_mode: how the image is padded (``"constant"``, ``"reflect"``, ...).
        cval: the value of constant padding.

    Example:
        .. code-block:: python

            grid = WindowGrid.from_monai((100, 90, 40), roi_size=(64, 64, 64), overlap=0.25, mode="gaussian")
            count = grid.count(torch.device("cpu"))  # (1, 1, *grid.padded_shape)
            windows = [grid.pad_image(image)[(..., *w)] for w in grid.slices]
    """

    spatial_shape: tuple[int, ...]
    roi_size: tuple[int, ...]
    pad: list[int]
    slices: list[tuple[slice, ...]]
    importance: torch.Tensor = field(repr=False)
    padding_mode: str = PytorchPadMode.CONSTANT
    cval: float = 0.0

    @classmethod
    def from_monai(
        cls,
        spatial_shape: Sequence[int],
        roi_size: Sequence[int] | int,
        overlap: Sequence[float] | float = 0.25,
        mode: str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: str = PytorchPadMode.CONSTANT,
        cval: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> WindowGrid:
        """The grid :py:func:`monai.inferers.sliding_window_inference` uses with these settings (non-positive or
        ``None`` components of ``roi_size`` take the image size)."""
        spatial = tuple(int(s) for s in spatial_shape)
        roi = tuple(int(r) for r in fall_back_tuple(roi_size, spatial))
        padded_size, slices = window_slices(spatial, roi, ensure_tuple_rep(overlap, len(spatial)))
        pad: list[int] = []
        for s, r in zip(reversed(spatial), reversed(roi)):
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        importance = compute_importance_map(
            get_valid_patch_size(padded_size, roi), look_up_option(mode, BlendMode), sigma_scale,
            device=torch.device("cpu") if device is None else device, dtype=dtype,
        )[None, None]  # fmt: skip
        return cls(spatial, roi, pad, slices, importance, look_up_option(padding_mode, PytorchPadMode), cval)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """The spatial shape of the padded grid."""
        n = len(self.spatial_shape)
        return tuple(s + self.pad[2 * (n - 1 - d)] + self.pad[2 * (n - 1 - d) + 1] for d, s in enumerate(self.spatial_shape))

    @property
    def pad_before(self) -> tuple[int, ...]:
        """Voxels of padding before the image, per spatial dimension."""
        n = len(self.spatial_shape)
        return tuple(self.pad[2 * (n - 1 - d)] for d in range(n))

    @property
    def padded(self) -> bool:
        """Whether the image is padded (smaller than the window in some dimension)."""
        return any(self.pad)

    @property
    def crop(self) -> tuple[slice, ...]:
        """The index ``(:, :, *spatial)`` of the image inside a padded-grid tensor ``(B, C, *padded_shape)``."""
        return (slice(None), slice(None), *(slice(p, p + s) for p, s in zip(self.pad_before, self.spatial_shape)))

    def pad_image(self, image: torch.Tensor) -> torch.Tensor:
        """The image ``(B, C, *spatial)`` padded as MONAI pads it (``padding_mode``, ``cval``)."""
        return F.pad(image, self.pad, mode=self.padding_mode, value=self.cval) if self.padded else image

    def pad_zeros(self, volume: torch.Tensor) -> torch.Tensor:
        """A volume ``(B, C, *spatial)`` (region weights, logits) padded with zeros onto the padded grid."""
        return F.pad(volume, self.pad) if self.padded else volume

    def count(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The sum of the windows' importance maps ``(1, 1, *padded_shape)`` on ``device``: ``beta_w`` of window
        ``w`` is ``importance / count[w]``."""
        importance = self.importance.to(device)
        count = torch.zeros((1, 1, *self.padded_shape), dtype=importance.dtype, device=importance.device)
        for window in self.slices:
            count[(..., *window)] += importance
        return count


GridFactory = Callable[[Sequence[int]], WindowGrid]
"""A window scheme: the :py:class:`WindowGrid` of an image's spatial shape (e.g. nnU-Net's tiles)."""


_INFERER_SETTINGS = ("roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale", "padding_mode", "cval", "sw_device",
                     "device", "progress", "cpu_thresh")  # fmt: skip


def inferer_window_settings(inferer: Any) -> dict[str, Any]:
    """The window settings of a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``) as keyword arguments of every
    sliding-window engine's constructor.

    Raises:
        TypeError: when ``inferer`` is not a ``SlidingWindowInferer``.

    Example:
        .. code-block:: python

            SlidingWindowSegCAM(net, **inferer_window_settings(inferer), layers="pre_head")
    """
    from monai.inferers import SlidingWindowInferer

    if not isinstance(inferer, SlidingWindowInferer):
        raise TypeError(f"from_inferer needs a monai.inferers.SlidingWindowInferer, got {type(inferer).__name__}.")
    return {name: getattr(inferer, name) for name in _INFERER_SETTINGS}
