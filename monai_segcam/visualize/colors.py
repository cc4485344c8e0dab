# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The colours of segmentation classes, one convention for every viewer (the notebook view, the Slicer colour table)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["class_colors"]

# distinct colours (Sasha Trubetskoy's list) for classes 1, 2, ...; class 0 (background) is transparent
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
]  # fmt: skip


def class_colors(classes: Sequence[int]) -> dict[int, tuple[int, int, int, int]]:
    """RGBA (0-255) of each class: ``(0, 0, 0, 0)`` for class 0, else a palette colour by class index.

    Example:
        >>> class_colors([0, 1, 2])
        {0: (0, 0, 0, 0), 1: (230, 25, 75, 255), 2: (60, 180, 75, 255)}
    """
    return {c: (0, 0, 0, 0) if c == 0 else (*_PALETTE[(c - 1) % len(_PALETTE)], 255) for c in classes}
