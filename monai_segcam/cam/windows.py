# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The window grid of a sliding-window pass: positions, padding and blending weights, as one value.

:py:class:`WindowGrid` is the functional core shared by everything that stitches windows (the CAM engines, the
stitched prediction, occlusion): the padded image size and the pad/crop between image and padded grid, the window
slices in the padded grid, the importance map of one window and the count map (the sum of the importance maps), so
that the stitched output is ``Y = sum_w importance * f_w / count`` exactly as MONAI's
:py:func:`~monai.inferers.sliding_window_inference` computes it. :py:meth:`WindowGrid.from_monai` reproduces MONAI's
grid; another scheme (nnU-Net's tiles) is another factory returning the same value.

:py:class:`WindowSettings` is what every sliding-window engine (the CAM engines, the perturbation explainers) is
configured with: MONAI's inferer settings or another window scheme, and where windows run and volumes accumulate.
:py:class:`WindowedEngine` gives an engine these settings as attributes, its grid and ``from_inferer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, overload

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.utils import BlendMode, PytorchPadMode, ensure_tuple, ensure_tuple_rep, fall_back_tuple, look_up_option
from torch import nn

if TYPE_CHECKING:
    from types import EllipsisType

__all__ = [
    "WindowGrid",
    "GridFactory",
    "WindowSettings",
    "WindowedEngine",
    "window_slices",
    "window_index",
    "inferer_window_settings",
]

Index = tuple[Union[int, slice, "EllipsisType"], ...]
"""A tensor index of basic items (integers, slices, ``...``)."""


def window_index(window: Sequence[slice], *leading: int | slice | EllipsisType) -> Index:
    """The index ``(*leading, *window)`` of one window in a tensor (e.g. ``(b, slice(None))`` before the spatial
    slices of a ``(B, C, *spatial)`` volume, or ``...``).

    Example:
        .. code-block:: python

            for b, window in windows:
                total[window_index(window, b, slice(None))] += logits * importance
    """
    return (*leading, *window)


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
        roi_size: Sequence[int] | int | None,
        overlap: Sequence[float] | float = 0.25,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **settings: Any,
    ) -> WindowGrid:
        """The grid :py:func:`monai.inferers.sliding_window_inference` uses with these settings (``mode``,
        ``sigma_scale``, ``padding_mode``, ``cval``: see :py:class:`WindowSettings`), the importance map on ``device``
        in ``dtype``; non-positive or ``None`` components of ``roi_size`` take the image size."""
        return WindowSettings(roi_size, overlap=overlap, **settings).grid(spatial_shape, device, dtype)

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
            count[window_index(window, ...)] += importance
        return count


GridFactory = Callable[[Sequence[int]], WindowGrid]
"""A window scheme: the :py:class:`WindowGrid` of an image's spatial shape (e.g. nnU-Net's tiles)."""


@dataclass
class WindowSettings:
    """How an engine lays out and runs the windows of an image: MONAI's sliding-window settings (or another window
    scheme), where windows run and where volume-sized tensors accumulate.

    Attributes:
        roi_size: the window size; ``None`` or non-positive components take the image size (``None``: one window).
        sw_batch_size: windows per forward pass.
        overlap: window overlap per dimension, in [0, 1).
        mode: blending, ``"constant"`` or ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        padding_mode, cval: how images smaller than the window are padded.
        sw_device: where windows run; defaults to the network's device (the image's for a network without
            parameters).
        device: where volume-sized tensors accumulate; defaults to the image's device.
        progress: show progress bars over windows.
        cpu_thresh: like ``SlidingWindowInferer``: accumulate on the CPU when the image has more voxels than this.
        window_grid: another window scheme, ``fn(spatial_shape) -> WindowGrid`` (e.g. nnU-Net's tiles); by default
            MONAI's grid with the settings above.

    Example:
        .. code-block:: python

            settings = WindowSettings(roi_size=(96, 96, 96), overlap=0.5, mode="gaussian", sw_batch_size=4)
            sw_device, device = settings.devices(image, network)
            grid = settings.grid(image.shape[2:], sw_device, image.dtype)
    """

    roi_size: Sequence[int] | int | None = None
    sw_batch_size: int = 1
    overlap: Sequence[float] | float = 0.25
    mode: str = BlendMode.CONSTANT
    sigma_scale: Sequence[float] | float = 0.125
    padding_mode: str = PytorchPadMode.CONSTANT
    cval: float = 0.0
    sw_device: torch.device | str | None = None
    device: torch.device | str | None = None
    progress: bool = False
    cpu_thresh: int | None = None
    window_grid: GridFactory | None = None

    def __post_init__(self) -> None:
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {self.sw_batch_size}.")
        overlaps = (self.overlap,) if isinstance(self.overlap, (int, float)) else tuple(self.overlap)
        if any(not 0 <= o < 1 for o in overlaps):
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        self.mode = look_up_option(self.mode, BlendMode)
        self.padding_mode = look_up_option(self.padding_mode, PytorchPadMode)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of every sliding-window engine's constructor."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> dict[str, Any]:
        """The window layout as JSON values: ``roi_size`` (a list, ``[-1]`` for the whole image), ``overlap``,
        ``sw_batch_size`` and ``mode``."""
        roi = [-1] if self.roi_size is None else [int(r) for r in ensure_tuple(self.roi_size)]
        overlap = self.overlap if isinstance(self.overlap, (int, float)) else list(self.overlap)
        return {"roi_size": roi, "overlap": overlap, "sw_batch_size": self.sw_batch_size, "mode": str(self.mode)}

    def grid(
        self, spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> WindowGrid:
        """The window grid of an image of ``spatial_shape``: ``window_grid``'s when given, else MONAI's, with the
        importance map on ``device`` in ``dtype`` (the image's, as MONAI computes it)."""
        if self.window_grid is not None:
            return self.window_grid(tuple(spatial_shape))
        spatial = tuple(int(s) for s in spatial_shape)
        roi = tuple(int(r) for r in fall_back_tuple(-1 if self.roi_size is None else self.roi_size, spatial))
        padded_size, slices = window_slices(spatial, roi, ensure_tuple_rep(self.overlap, len(spatial)))
        pad: list[int] = []
        for s, r in zip(reversed(spatial), reversed(roi)):
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        importance = compute_importance_map(
            get_valid_patch_size(padded_size, roi), self.mode, self.sigma_scale,
            device=torch.device("cpu") if device is None else device, dtype=dtype,
        )[None, None]  # fmt: skip
        return WindowGrid(spatial, roi, pad, slices, importance, self.padding_mode, self.cval)

    def devices(self, image: torch.Tensor, network: nn.Module | None = None) -> tuple[torch.device, torch.device]:
        """``(sw_device, device)`` for ``image`` ``(B, C, *spatial)`` explained through ``network``."""
        if self.sw_device is not None:
            sw_device = torch.device(self.sw_device)
        else:
            params = network.parameters() if network is not None else iter(())
            sw_device = next((p.device for p in params), image.device)
        if self.cpu_thresh is not None and image.shape[2:].numel() > self.cpu_thresh:
            return sw_device, torch.device("cpu")
        return sw_device, torch.device(self.device) if self.device is not None else image.device


def inferer_window_settings(inferer: Any) -> WindowSettings:
    """The window settings of a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``).

    Raises:
        TypeError: when ``inferer`` is not a ``SlidingWindowInferer``.

    Example:
        .. code-block:: python

            SlidingWindowSegCAM(net, **inferer_window_settings(inferer).as_kwargs(), layers="pre_head")
    """
    from monai.inferers import SlidingWindowInferer

    if not isinstance(inferer, SlidingWindowInferer):
        raise TypeError(f"from_inferer needs a monai.inferers.SlidingWindowInferer, got {type(inferer).__name__}.")
    names = ("roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale", "padding_mode", "cval", "sw_device",
             "device", "progress", "cpu_thresh")  # fmt: skip
    return WindowSettings(**{name: getattr(inferer, name) for name in names})


V = TypeVar("V")
E = TypeVar("E", bound="WindowedEngine")


class _Setting(Generic[V]):
    """An engine attribute kept in its window settings: ``engine.roi_size`` reads and writes
    ``engine.window.roi_size``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, engine: None, owner: type) -> _Setting[V]: ...

    @overload
    def __get__(self, engine: WindowedEngine, owner: type) -> V: ...

    def __get__(self, engine: WindowedEngine | None, owner: type) -> _Setting[V] | V:
        return self if engine is None else getattr(engine.window, self.name)

    def __set__(self, engine: WindowedEngine, value: V) -> None:
        setattr(engine.window, self.name, value)


class WindowedEngine:
    """What every engine running a network window by window shares: its :py:class:`WindowSettings` ``window``, also
    read as attributes (``engine.roi_size`` is ``engine.window.roi_size``), the grid of an image and
    :py:meth:`from_inferer`.

    Example:
        .. code-block:: python

            class MyExplainer(WindowedEngine):
                def __init__(self, network, roi_size=None, **window_kwargs):
                    self.network, self.window = network, WindowSettings(roi_size, **window_kwargs)

            explainer = MyExplainer.from_inferer(inferer, network)
            grid = explainer.grid(image.shape[2:])  # its windows on an image
    """

    window: WindowSettings
    roi_size: _Setting[Sequence[int] | int | None] = _Setting()
    sw_batch_size: _Setting[int] = _Setting()
    overlap: _Setting[Sequence[float] | float] = _Setting()
    mode: _Setting[str] = _Setting()
    sigma_scale: _Setting[Sequence[float] | float] = _Setting()
    padding_mode: _Setting[str] = _Setting()
    cval: _Setting[float] = _Setting()
    sw_device: _Setting[torch.device | str | None] = _Setting()
    device: _Setting[torch.device | str | None] = _Setting()
    progress: _Setting[bool] = _Setting()
    cpu_thresh: _Setting[int | None] = _Setting()
    window_grid: _Setting[GridFactory | None] = _Setting()

    @classmethod
    def from_inferer(cls: type[E], inferer: Any, network: nn.Module | Sequence[nn.Module], **kwargs: Any) -> E:
        """Build from a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``), reusing its window settings;
        ``kwargs`` are the engine's other arguments (and override the inferer's settings).

        Example:
            .. code-block:: python

                sw_cam = SlidingWindowSegCAM.from_inferer(inferer, network, layers=["bottleneck", "pre_head"])
                occlusion = SegOcclusion.from_inferer(inferer, network, mask_size=16, baseline="blur")
        """
        build: Callable[..., E] = cls
        return build(network, **{**inferer_window_settings(inferer).as_kwargs(), **kwargs})

    def grid(
        self, spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> WindowGrid:
        """The window grid of an image of ``spatial_shape`` (see :py:meth:`WindowSettings.grid`)."""
        return self.window.grid(spatial_shape, device, dtype)
