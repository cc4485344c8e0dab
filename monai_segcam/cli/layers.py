# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam layers``: the layer table and roles of a network, for both of its front doors (a MONAI bundle or
network, an nnU-Net model folder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .io import CLIError

__all__ = ["show_layers"]


def show_layers(network: Any, shape: Sequence[int], quiet: bool, presets: dict[str, str] | None = None) -> int:
    """Print the :py:func:`~monai_segcam.cam.list_layers` table of ``network`` on a random probe of ``shape`` and its
    roles (``presets``, else those discovered); a network failing on the probe gives a :py:class:`CLIError` naming
    the shape."""
    from monai_segcam.cam import list_layers
    from monai_segcam.utils.loading import first_line

    try:
        table = list_layers(network, shape)
    except Exception as exc:
        reason = f"the network failed on a random probe input of shape {tuple(shape)} (set --input-shape)"
        raise CLIError(f"{reason}: {first_line(exc)}") from exc
    if not quiet:
        print(table)
        name = type(network).__name__
        roles = presets if presets is not None else table.roles.roles if table.roles else {}
        heading = f"presets ({name})" if presets is not None else f"roles ({name}, discovered on {tuple(shape)})"
        print(f"\n{heading}:" if roles else f"\nno roles for {name}: use layer names")
        for role, layer in roles.items():
            print(f"  {role:<12} -> {layer}")
    return 0
