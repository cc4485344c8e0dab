# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMHandler under torch.distributed (2 processes, gloo, CPU): each rank explains its own cases, rank 0 writes
the one CSV and the one review report (SegCAMReportHandler) with every case."""

from __future__ import annotations

import csv
import gc
import json
import os
import socket
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from test_segcam_handler import make_net, preprocessing, write_cases
from torch.utils.data import DistributedSampler

from monai_segcam.handlers import SegCAMHandler, SegCAMReportHandler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _explain_my_cases(folder: str, rank: int) -> None:
    with open(os.path.join(folder, "files.jsonl"), encoding="utf-8") as stream:
        files = [json.loads(line) for line in stream]
    dataset = Dataset(files, preprocessing())
    sampler = DistributedSampler(dataset, shuffle=False)  # 3 cases on 2 ranks: case_0 is repeated on rank 1
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=0)
    net = torch.nn.parallel.DistributedDataParallel(make_net())
    handler = SegCAMHandler(classes=1, output_dir=os.path.join(folder, "cams"), on_error="skip", structures=True)
    # a second handler whose only case lives on rank 0: rank 1 has no rows to send
    only = SegCAMHandler(classes=1, cam_key="cam2", output_dir=os.path.join(folder, "only"), cases=["case_2"])
    report = SegCAMReportHandler(os.path.join(folder, "report"), handler, max_size=16)  # rank 0 writes every page
    SupervisedEvaluator(torch.device("cpu"), loader, net, val_handlers=[handler, only, report]).run()
    with open(os.path.join(folder, f"rank{rank}.json"), "w", encoding="utf-8") as stream:
        json.dump({"rows": sorted({row["case"] for row in handler.rows})}, stream)


def _worker(rank: int, folder: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)  # ignite would otherwise guess it from host names (and warn)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=120)
    )
    try:
        _explain_my_cases(folder, rank)
        # The evaluator's reference cycles keep the DDP reducer, and with it the process group, alive: free them
        # while the group is still up, and let no rank tear it down while its peer may still be communicating.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    open(os.path.join(folder, f"rank{rank}.done"), "w", encoding="utf-8").close()


def _run_two_ranks(folder: Path) -> None:
    """Spawn the 2 ranks and wait for both; unlike ``mp.spawn``, a rank that fails does not kill its peer first.

    A rank that raised, hung or died before finishing its work fails the test with its own error. A rank that
    finished its work and left the process group cleanly (``rank<r>.done``) but whose interpreter then exited with
    a signal -- C++ teardown of torch.distributed at exit, which is neither this package's code nor its output --
    gives a warning instead, so the outputs are still checked.
    """
    context = mp.start_processes(_worker, args=(str(folder), _free_port()), nprocs=2, join=False, start_method="spawn")
    for process in context.processes:
        process.join(timeout=240)
    for rank, process in enumerate(context.processes):
        if process.is_alive():
            for other in context.processes:
                other.kill()
            pytest.fail(f"rank {rank} did not finish within 240 s")
    unfinished = [rank for rank in range(2) if not (folder / f"rank{rank}.done").exists()]
    if unfinished or any(process.exitcode > 0 for process in context.processes):
        context.join()  # raises the failing rank's exception with its traceback
        pytest.fail(
            f"ranks {unfinished} did not finish their work (exit codes {[p.exitcode for p in context.processes]})"
        )
    for rank, process in enumerate(context.processes):
        if process.exitcode != 0:
            warnings.warn(f"rank {rank} finished its work, then its interpreter died of signal {-process.exitcode}",
                          stacklevel=2)  # fmt: skip


@pytest.mark.slow
def test_each_rank_explains_its_cases_rank0_writes_the_csv(tmp_path):
    files = write_cases(tmp_path, n=3)
    with open(tmp_path / "files.jsonl", "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(item) + "\n" for item in files)
    _run_two_ranks(tmp_path)

    out = tmp_path / "cams"
    assert sorted(name for name in os.listdir(out) if name.endswith(".nii.gz")) == [
        f"case_{i}_cam_hirescam_pre_head_class1.nii.gz" for i in range(3)
    ]
    assert sorted(name for name in os.listdir(out) if name.endswith(".csv")) == [
        *(f"case_{i}_structures.csv" for i in range(3)), "segcam_stats.csv", "segcam_structures.csv"
    ]
    with open(out / "segcam_structures.csv", newline="", encoding="utf-8") as stream:
        cohort = list(csv.DictReader(stream))  # every rank's cases, the padding duplicate dropped
    per_case = {}
    for i in range(3):
        with open(out / f"case_{i}_structures.csv", newline="", encoding="utf-8") as stream:
            per_case[i] = {row["structure"]: float(row["share"]) for row in csv.DictReader(stream)}
    for line in cohort:
        shares = [rows[line["structure"]] for rows in per_case.values() if line["structure"] in rows]
        assert int(line["n"]) == len(shares) and float(line["share_mean"]) == pytest.approx(sum(shares) / len(shares))
    assert max(int(line["n"]) for line in cohort) == 3
    with open(out / "segcam_stats.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["case"] for row in rows] == ["case_0", "case_1", "case_2", "mean", "std"]  # padding duplicate dropped
    assert next(row["n"] for row in rows if row["case"] == "mean") == "3"
    with open(tmp_path / "only" / "segcam_stats.csv", newline="", encoding="utf-8") as stream:
        assert [row["case"] for row in csv.DictReader(stream)] == ["case_2", "mean", "std"]
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert [case["name"] for case in report["cases"]] == ["case_0", "case_1", "case_2"]  # both ranks', once each
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(2)]
    assert ranks[0]["rows"] == ["case_0", "case_1", "case_2"]  # gathered on rank 0
    assert ranks[1]["rows"] == ["case_0", "case_1"]  # rank 1 keeps its own rows (case_1 and the padded case_0)
