# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Occlusion (``--method occlusion``) and the per-case channel table (``--channel-table``) of ``explain``."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from .io import CLIError

__all__ = ["add_arguments", "one_or_all", "occlusion_options", "channel_engine"]


def _baseline(text: str) -> float | str:
    if text in ("mean", "blur"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid baseline {text!r}: use a number, mean or blur") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``occlusion and input channels`` option group of ``explain``."""
    group = parser.add_argument_group("occlusion (--method occlusion) and input channels (--channel-table)")
    group.add_argument("--mask-size", nargs="+", type=int, default=[16], metavar="N",
                       help="occluder size in voxels, one value or one per axis (default 16)")  # fmt: skip
    group.add_argument("--mask-stride", nargs="+", type=int, metavar="N", help="occluder step (default: --mask-size)")
    group.add_argument("--baseline", type=_baseline, default=0.0, metavar="B",
                       help="what occluded voxels become: a number (default 0), mean or blur")  # fmt: skip
    group.add_argument("--perturbation-batch-size", type=int, default=8, metavar="N",
                       help="occluded windows per forward pass (default 8)")  # fmt: skip
    group.add_argument("--channel-table", action="store_true",
                       help="write <case>_channels.csv: per class and input channel, the region score drop when the "
                       "channel alone takes the baseline, input x gradient and integrated gradients")  # fmt: skip
    group.add_argument("--channel-names", nargs="+", metavar="NAME",
                       help="input channel names (default: the bundle metadata's channel_def)")  # fmt: skip
    group.add_argument("--steps", type=int, default=16, metavar="N", help="integrated-gradients steps (default 16)")


def one_or_all(values: list[int] | None) -> Any:
    """A size option (``nargs="+"``) as the engines take it: ``None``, one value for every axis, or one per axis."""
    return None if values is None else values[0] if len(values) == 1 else tuple(values)


def occlusion_options(args: Namespace) -> dict[str, Any]:
    """The occluder options of :py:class:`~monai_segcam.perturbation.SegOcclusion` from the command line."""
    stride = one_or_all(args.mask_stride)
    return {"mask_size": one_or_all(args.mask_size), "stride": stride, "baseline": args.baseline,
            "batch_size": args.perturbation_batch_size}  # fmt: skip


def channel_engine(inferer: Any, network: Any, args: Namespace, common: dict[str, Any]) -> Any:
    """:py:class:`~monai_segcam.perturbation.ChannelAttribution` with the CAMs' windows (``inferer`` and the
    overrides in ``common``), or ``None`` without ``--channel-table``."""
    if not args.channel_table:
        return None
    from monai_segcam.perturbation import ChannelAttribution

    extra = {"baseline": args.baseline, "steps": args.steps, "batch_size": args.perturbation_batch_size}
    try:
        return ChannelAttribution.from_inferer(inferer, network, **{**common, "progress": False}, **extra)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
