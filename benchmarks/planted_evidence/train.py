# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Train the small UNets of the planted-evidence benchmark on CPU and write ``<task>_unet.pt`` next to this file.

Every step draws a fresh batch of generated cases (seeds ``step * batch_size + i``, all below
``HELD_OUT_SEED``), so the networks never see an evaluation case. Held-out Dice (and, for ``"marker"``, the accuracy
of the structure's class 1 vs 2, by majority vote of the voxels predicted as foreground inside the structure) is
printed at the end.

Run: ``python benchmarks/planted_evidence/train.py`` (2 to 5 minutes per task, one thread; ``--task marker`` for one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from monai.losses import DiceCELoss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HELD_OUT_SEED, NUM_CLASSES, SHAPE, build_network, checkpoint_path

from monai_segcam.data.planted import PLANTED_TASKS, make_planted_batch

__all__ = ["train", "evaluate"]


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, classes: list[int]) -> dict[int, float]:
    """Dice of each foreground class over a whole batch of label maps (B, 1, *S)."""
    out = {}
    for c in classes:
        p, t = pred == c, label == c
        denom = int(p.sum() + t.sum())
        out[c] = 2.0 * int((p & t).sum()) / denom if denom else float("nan")
    return out


def evaluate(task: str, net: torch.nn.Module, num: int = 32) -> dict[str, float]:
    """Held-out Dice per foreground class and, for ``"marker"``, the structure's class accuracy.

    Example:

    .. code-block:: python

        print(evaluate("marker", load_network("marker")))
    """
    batch = make_planted_batch(task, range(HELD_OUT_SEED, HELD_OUT_SEED + num), SHAPE)
    preds = []
    with torch.no_grad():
        for i in range(0, num, 8):
            preds.append(net.eval()(torch.from_numpy(batch["image"][i : i + 8])).argmax(1, keepdim=True))
    pred, label = torch.cat(preds), torch.from_numpy(batch["label"])
    result = {f"dice_class{c}": d for c, d in dice_per_class(pred, label, list(range(1, NUM_CLASSES[task]))).items()}
    if task == "marker":
        structure = torch.from_numpy(batch["structure"])
        votes = [torch.bincount(pred[i][structure[i]], minlength=3)[1:] for i in range(num)]
        assigned = np.array([int(v.argmax()) + 1 for v in votes])
        result["class_accuracy"] = float((assigned == batch["class"]).mean())
        result["dice_foreground"] = dice_per_class((pred > 0).long(), (label > 0).long(), [1])[1]
    return result


def train(task: str, steps: int, batch_size: int = 4, lr: float = 3e-3, seed: int = 0) -> torch.nn.Module:
    """Train the network of ``task`` on fresh generated batches (Adam, Dice + cross-entropy, cosine schedule).

    Example:

    .. code-block:: python

        net = train("two_objects", steps=50)
    """
    torch.manual_seed(seed)
    net = build_network(task)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    start = time.perf_counter()
    net.train()
    for step in range(steps):
        batch = make_planted_batch(task, range(step * batch_size, (step + 1) * batch_size), SHAPE)
        loss = loss_fn(net(torch.from_numpy(batch["image"])), torch.from_numpy(batch["label"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{task} step {step:4d} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=PLANTED_TASKS, action="append", help="task(s) to train; default: both")
    parser.add_argument("--steps", type=int, help="optimiser steps (default: 1200 marker, 600 two_objects)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # 2 threads on 2 shared cores run ~10x slower than 1
    for task in args.task or PLANTED_TASKS:
        steps = args.steps or {"marker": 1200, "two_objects": 600}[task]
        net = train(task, steps)
        torch.save(net.state_dict(), checkpoint_path(task))
        print(task, {k: round(v, 4) for k, v in evaluate(task, net).items()}, flush=True)


if __name__ == "__main__":
    main()
