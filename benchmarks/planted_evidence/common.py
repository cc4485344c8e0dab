# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Networks, checkpoints and seed ranges shared by the planted-evidence training script, benchmark and test."""

from __future__ import annotations

import os

import torch
from monai.networks.nets import UNet

from monai_segcam.data.planted import PLANTED_TASKS

__all__ = ["HERE", "SHAPE", "NUM_CLASSES", "HELD_OUT_SEED", "build_network", "checkpoint_path", "load_network"]

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (40, 40, 40)
NUM_CLASSES = {"marker": 3, "two_objects": 2}
HELD_OUT_SEED = 1_000_000  # training uses seeds below this, evaluation seeds from here on


def build_network(task: str) -> UNet:
    """The small UNet of ``task``: ``UNet(3, 1, K, (8, 16, 32, 64), (2, 2, 2), num_res_units=1)``.

    Example:

    .. code-block:: python

        net = build_network("marker")  # 3 output channels: background, class 1, class 2
    """
    if task not in PLANTED_TASKS:
        raise ValueError(f"task must be one of {PLANTED_TASKS}, got {task!r}.")
    return UNet(3, 1, NUM_CLASSES[task], (8, 16, 32, 64), (2, 2, 2), num_res_units=1)


def checkpoint_path(task: str) -> str:
    """The committed checkpoint of ``task`` next to this file."""
    return os.path.join(HERE, f"{task}_unet.pt")


def load_network(task: str) -> UNet:
    """The trained network of ``task`` in eval mode, on the CPU.

    Example:

    .. code-block:: python

        net = load_network("two_objects")
    """
    net = build_network(task)
    net.load_state_dict(torch.load(checkpoint_path(task), map_location="cpu", weights_only=True))
    return net.eval()
