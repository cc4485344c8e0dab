# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Colours of a review report (CAM colour maps, class palette, shared with the browser viewer) and the thumbnails.

The colour maps are lists of evenly spaced RGB stops, linearly interpolated; the viewer receives the same lists, so
a thumbnail and the case page colour a map alike. ``inferno`` and ``viridis`` are matplotlib's, sampled at 9 stops.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "class_color", "lookup", "thumbnail", "encode_png"]

COLORMAPS: dict[str, list[tuple[int, int, int]]] = {
    "jet": [(0, 0, 143), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)],
    "hot": [(10, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)],
    "inferno": [  # matplotlib's, 9 stops
        (0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84), (228, 90, 49), (249, 142, 9),
        (249, 203, 53), (252, 255, 164),
    ],  # fmt: skip
    "viridis": [  # matplotlib's, 9 stops
        (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140), (40, 174, 128), (94, 201, 98),
        (173, 220, 48), (253, 231, 37),
    ],  # fmt: skip
    "red": [(64, 0, 0), (255, 0, 0), (255, 160, 160)],
}
DEFAULT_COLORMAP = "jet"
_PALETTE = [
    (0, 200, 255), (255, 0, 255), (255, 230, 0), (0, 230, 80), (255, 128, 0),
    (140, 140, 255), (255, 128, 192), (128, 255, 224), (200, 160, 90), (160, 255, 100),
]  # fmt: skip


def class_color(index: int) -> tuple[int, int, int]:
    """The display colour of class ``index`` (a label value; multi-label channel ``c`` uses ``c + 1``), cycling
    through 10 colours.

    Example:
        >>> class_color(1)
        (0, 200, 255)
    """
    return _PALETTE[(max(index, 1) - 1) % len(_PALETTE)]


def lookup(values: np.ndarray, name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """RGB ``uint8`` colours ``(*values.shape, 3)`` of ``values`` in ``[0, 1]`` through colour map ``name``.

    Example:
        >>> lookup(np.array([0.0, 1.0]), "hot").tolist()
        [[10, 0, 0], [255, 255, 255]]
    """
    stops = np.array(COLORMAPS[name], dtype=np.float64)
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.minimum(np.floor(position).astype(int), len(stops) - 2)
    t = (position - low)[..., None]
    return np.rint(stops[low] * (1 - t) + stops[low + 1] * t).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def thumbnail(
    image: np.ndarray,
    cam: np.ndarray | None,
    outlines: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
    threshold: float = 0.1,
) -> np.ndarray:
    """An RGB picture ``(H, W, 3)`` of one axial slice: the image in grey (values in ``[0, 1]``), the CAM (values in
    ``[0, 1]``) in the default colour map where above ``threshold``, half transparent, and outlines of boolean masks
    in their colours.

    The slice arrays are ``(X, Y)`` on the RAS-ordered report grid; the picture follows the package's one display
    convention (:py:mod:`~monai_segcam.visualize.planes`, like the viewer's axial plane and every PNG): anterior at
    the top and the patient's right on the left (radiological).

    Example:
        .. code-block:: python

            picture = thumbnail(image[:, :, k], cam[:, :, k] / cam.max(), [(seg[:, :, k] == 1, (0, 200, 255))])
    """
    grey = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=-1)
    if cam is not None:
        shown = (cam > threshold)[..., None]
        grey = np.where(shown, 0.5 * grey + 0.5 * lookup(cam), grey)
    for mask, color in outlines:
        grey[_outline(mask)] = color
    return np.ascontiguousarray(np.rint(grey).astype(np.uint8).transpose(1, 0, 2)[::-1, ::-1])


def encode_png(rgb: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG of ``rgb`` ``(H, W, 3)`` ``uint8``.

    Example:
        .. code-block:: python

            open("picture.png", "wb").write(encode_png(np.zeros((8, 8, 3), np.uint8)))
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}.")
    height, width = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
