# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Picking the segmentation logits from a network's output: a tensor, or a list/tuple/dict of them.

Networks with deep supervision (SegResNetDS and DynUNet in training mode, nnU-Net's ``PlainConvUNet`` with
``deep_supervision=True``) return one output per resolution; networks with several heads return a dict. The
logits explained are the full-resolution output: the only tensor on the input's grid (or, when that grid is not
known, the only largest one). Anything else needs ``output_selector``: an index, a key or a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch

__all__ = ["OutputSelector", "select_logits", "output_options"]

OutputSelector = Union[int, str, Callable[[Any], torch.Tensor], None]


def output_options(output: Any, path: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor inside ``output`` (nested lists, tuples and dicts) with its path, e.g. ``"[1]"``, ``"['seg']"``.

    Example:
        .. code-block:: python

            output_options([torch.zeros(1, 3, 8, 8, 8), {"aux": torch.zeros(1, 2)}])
            # [('[0]', tensor(...)), ("[1]['aux']", tensor(...))]
    """
    if isinstance(output, torch.Tensor):
        return [(path, output)]
    if isinstance(output, dict):
        return [opt for key, value in output.items() for opt in output_options(value, f"{path}[{key!r}]")]
    if isinstance(output, (list, tuple)):
        return [opt for i, value in enumerate(output) for opt in output_options(value, f"{path}[{i}]")]
    return []


def _describe(options: list[tuple[str, torch.Tensor]]) -> str:
    return ", ".join(f"{path} {tuple(t.shape)}" for path, t in options)


def _automatic(output: Any, spatial_shape: Sequence[int] | None) -> torch.Tensor:
    options = output_options(output)
    maps = [(path, t) for path, t in options if t.ndim >= 3]
    if spatial_shape is not None:
        full = [(path, t) for path, t in maps if tuple(t.shape[2:]) == tuple(spatial_shape)]
        where = f"on the input's grid {tuple(spatial_shape)}"
    else:
        largest = max((math.prod(t.shape[2:]) for _, t in maps), default=None)
        full = [(path, t) for path, t in maps if math.prod(t.shape[2:]) == largest]
        where = "at the largest resolution"
    if len(full) == 1:
        return full[0][1]
    reason = f"{len(full)} of them are {where}" if full else f"none is {where}"
    raise TypeError(
        f"The network returned a {type(output).__name__} (e.g. deep supervision or several heads) and {reason}: "
        f"{_describe(options) or 'no tensor'}; choose the segmentation logits with `output_selector=` "
        "(an index, a key or a callable)."
    )


def select_logits(
    output: Any, selector: OutputSelector = None, spatial_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """The segmentation logits ``(B, C, *spatial)`` from a network output.

    Args:
        output: what the network returned: a tensor, or a (nested) list, tuple or dict of tensors.
        selector: ``None`` picks the full-resolution logits automatically (the one tensor whose spatial shape is
            ``spatial_shape``, or the one largest when ``spatial_shape`` is ``None``); an index or key picks
            ``output[selector]``; a callable returns the logits from the output.
        spatial_shape: the input's spatial shape, when known.

    Raises:
        TypeError: the output is ambiguous (several full-resolution tensors, or none), naming the options.
        ValueError: ``selector`` names nothing in the output, naming the options.

    Example:
        .. code-block:: python

            net = SegResNetDS(3, init_filters=8, in_channels=1, out_channels=2, dsdepth=3).train()
            logits = select_logits(net(image), spatial_shape=image.shape[2:])  # the full-resolution output
    """
    if callable(selector):
        value = selector(output)
    elif selector is not None:
        try:
            value = output[selector]
        except (IndexError, KeyError, TypeError):
            raise ValueError(
                f"output_selector={selector!r} does not exist in the network's {type(output).__name__} output; "
                f"options: {_describe(output_options(output)) or 'none'}."
            ) from None
    elif isinstance(output, torch.Tensor):
        value = output
    else:
        value = _automatic(output, spatial_shape)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"output_selector={selector!r} gave a {type(value).__name__}, not a tensor; options: "
            f"{_describe(output_options(value)) or 'none'}."
        )
    return value
