# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMHandler under torch.distributed (2 processes, gloo, CPU): each rank explains its own cases, rank 0 writes
the one CSV with every case."""

from __future__ import annotations

import csv
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from torch.utils.data import DistributedSampler

from monai_segcam.handlers import SegCAMHandler

from test_segcam_handler import make_net, preprocessing, write_cases  # noqa: E402 (same folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, folder: str, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        files = [json.loads(line) for line in open(os.path.join(folder, "files.jsonl"))]
        dataset = Dataset(files, preprocessing())
        sampler = DistributedSampler(dataset, shuffle=False)  # 3 cases on 2 ranks: case_0 is repeated on rank 1
        loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=0)
        net = torch.nn.parallel.DistributedDataParallel(make_net())
        handler = SegCAMHandler(classes=1, output_dir=os.path.join(folder, "cams"), on_error="skip")
        # a second handler whose only case lives on rank 0: rank 1 has no rows to send
        only = SegCAMHandler(classes=1, cam_key="cam2", output_dir=os.path.join(folder, "only"), cases=["case_2"])
        SupervisedEvaluator(torch.device("cpu"), loader, net, val_handlers=[handler, only]).run()
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as stream:
            json.dump({"rows": sorted({row["case"] for row in handler.rows})}, stream)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_each_rank_explains_its_cases_rank0_writes_the_csv(tmp_path):
    files = write_cases(tmp_path, n=3)
    with open(tmp_path / "files.jsonl", "w") as stream:
        stream.writelines(json.dumps(item) + "\n" for item in files)
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=2, join=True)

    out = tmp_path / "cams"
    assert sorted(name for name in os.listdir(out) if name.endswith(".nii.gz")) == [
        f"case_{i}_cam_hirescam_pre_head_class1.nii.gz" for i in range(3)
    ]
    assert sorted(name for name in os.listdir(out) if name.endswith(".csv")) == ["segcam_stats.csv"]
    with open(out / "segcam_stats.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["case"] for row in rows] == ["case_0", "case_1", "case_2", "mean", "std"]  # padding duplicate dropped
    assert next(row["n"] for row in rows if row["case"] == "mean") == "3"
    with open(tmp_path / "only" / "segcam_stats.csv", newline="") as stream:
        assert [row["case"] for row in csv.DictReader(stream)] == ["case_2", "mean", "std"]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert ranks[0]["rows"] == ["case_0", "case_1", "case_2"]  # gathered on rank 0
    assert ranks[1]["rows"] == ["case_0", "case_1"]  # rank 1 keeps its own rows (case_1 and the padded case_0)
