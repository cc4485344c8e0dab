# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import glob

import pytest

from monai_segcam.visualize import log_cam_to_tensorboard

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def test_log_cam_writes_event_file(volumes, tmp_path):
    image, cam, region = volumes
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        log_cam_to_tensorboard(writer, "cam/liver", image, cam, region=region, step=3, figsize=(6.0, 2.5))
    events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert len(events) == 1
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["cam/liver"]
    (img,) = acc.Images("cam/liver")
    assert (img.step, img.width, img.height) == (3, 600, 250)
