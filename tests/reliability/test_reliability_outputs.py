# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Outputs at dataset scale, on the one writer: an evaluation killed with SIGKILL and resumed ends with every case's
files once and complete and one CSV row per case, layer and class; a full disk gives a clear error and no partial
file (writer, handler, command line)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import EnsureChannelFirstd, LoadImaged

from monai_segcam.data import write_phantom_dataset
from monai_segcam.handlers import SegCAMHandler
from monai_segcam.outputs import read_table, write_nifti

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "segcam_demo"
NUM_CASES = 40
SHAPE = (24, 24, 16)


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _command(data: Path, out: Path, *overrides: str) -> list[str]:
    files = "['configs/inference.json','configs/evaluate.json']"
    options = ["--dataset_dir", str(data), "--output_dir", str(out), "--cam_layers", "pre_head", "--cam_save_png",
               "False", "--inferer#roi_size", "[32, 32, 16]", *overrides]  # fmt: skip
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *options]


def _cams(folder: Path) -> list[Path]:
    return sorted(folder.glob("image*_cam_hirescam_pre_head_class*.nii.gz"))


@pytest.mark.slow
def test_killed_evaluation_resumes_to_complete_outputs(tmp_path):
    """The demo bundle's evaluation (CAMs of the prediction, false positives and false negatives) over 40 cases,
    killed with SIGKILL once some cases are written, then run again with resume=True."""
    data, out = tmp_path / "data", tmp_path / "eval"
    items = write_phantom_dataset(data, NUM_CASES, SHAPE, seed=3000)
    cases = [Path(item["image"]).name.removesuffix(".nii.gz") for item in items]
    killed = subprocess.Popen(_command(data, out), cwd=BUNDLE, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(_cams(out)) < 10 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the evaluation ended before it could be killed in the middle"
    assert 10 <= len(_cams(out)) < 2 * NUM_CASES and not (out / "segcam_stats.csv").exists()
    written = {path: path.stat().st_mtime_ns for path in _cams(out)}

    resume = [f"--{handler}#resume" for handler in ("cam_handler", "cam_fp_handler", "cam_fn_handler")]
    done = subprocess.run(_command(data, out, *[a for option in resume for a in (option, "True")]), cwd=BUNDLE,
                          env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    kept = [path for path, stamp in written.items() if path.stat().st_mtime_ns == stamp]
    assert len(kept) >= len(written) - 4, "the finished cases were computed again instead of resumed"
    for folder, csv_name in ((out, "segcam_stats.csv"), (out / "cam_fp", "segcam_stats_fp.csv"),
                             (out / "cam_fn", "segcam_stats_fn.csv")):  # fmt: skip
        expected = [folder / f"{case}_cam_hirescam_pre_head_class{c}.nii.gz" for case in cases for c in (1, 2)]
        assert _cams(folder) == sorted(expected), folder  # every case's files, once, and nothing else
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], folder  # no temporary file, no journal
        for path in expected:  # none truncated: every NIfTI reads back whole
            values = nib.load(path).get_fdata()
            assert values.shape == SHAPE and np.isfinite(values).all(), path
        rows = read_table(folder / csv_name)  # one row per (case, layer, method, class): duplicates would collapse
        assert sorted((case, c) for case, _, _, c in rows) == sorted((case, str(c)) for case in cases for c in (1, 2))
        assert all(row["status"] == "ok" and row["max"] not in ("", "nan") for row in rows.values()), folder
        with open(folder / csv_name) as stream:
            assert sum(1 for line in stream) == 1 + len(rows) + 2 * 2  # header, rows, mean/std per class


def _enospc(*args, **kwargs):
    """nibabel's save on a full disk: a part of the file is written, then ``OSError(ENOSPC)``."""
    with open(args[1], "wb") as stream:
        stream.write(b"\x1f\x8b partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_writer_gives_a_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(nib, "save", _enospc)
    with pytest.raises(OSError, match=r"Could not write .*case_cam\.nii\.gz: No space left on device") as caught:
        write_nifti(np.zeros((1, 3, 3, 3), np.float32), tmp_path / "case_cam.nii.gz", affine=np.eye(4))
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def _evaluator(items: list[dict], handler: SegCAMHandler) -> SupervisedEvaluator:
    pre = LoadImaged(["image", "label"], image_only=True)
    loader = DataLoader(Dataset(items, [pre, EnsureChannelFirstd(["image", "label"])]), batch_size=1)
    torch.manual_seed(0)
    from monai.networks.nets import UNet

    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0)
    return SupervisedEvaluator("cpu", loader, net, val_handlers=[handler])


def test_full_disk_handler_names_the_case_and_leaves_no_partial_file(tmp_path, monkeypatch):
    items = write_phantom_dataset(tmp_path / "data", 2, SHAPE, seed=5)
    monkeypatch.setattr(nib, "save", _enospc)
    out = tmp_path / "cams"
    with pytest.raises(RuntimeError, match=r"case 'image000' failed: OSError: .*No space left on device"):
        _evaluator(items, SegCAMHandler(classes=[1, 2], output_dir=out)).run()
    assert not out.exists() or list(out.iterdir()) == []

    skip = SegCAMHandler(classes=[1, 2], output_dir=out, on_error="skip")
    _evaluator(items, skip).run()
    assert sorted(skip.failed) == ["image000", "image001"] and "No space left" in skip.failed["image000"]
    assert [p.name for p in out.iterdir()] == ["segcam_stats.csv"]  # the failures recorded, no partial NIfTI
    assert {row["status"] for row in read_table(out / "segcam_stats.csv").values()} == {"failed"}


def test_full_disk_command_line_gives_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    from monai_segcam.cli import main

    image = write_phantom_dataset(tmp_path / "data", 1, SHAPE, seed=7)[0]["image"]
    net_args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}
    torch.manual_seed(0)
    from monai.networks.nets import UNet

    torch.save(UNet(**net_args).state_dict(), tmp_path / "net.pt")
    monkeypatch.setattr(nib, "save", _enospc)
    out = tmp_path / "out"
    status = main(["explain", image, "--network", "monai.networks.nets.UNet", "--network-args", json.dumps(net_args),
                   "--checkpoint", str(tmp_path / "net.pt"), "--device", "cpu", "--no-png", "--quiet", "--output",
                   str(out)])  # fmt: skip
    assert status == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "No space left on device" in error[0] and "image000_seg.nii.gz" in error[0], error
    assert not out.exists()  # the case folder and every file of the case removed, and the --output it created
