# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Run the generic overlay ``bundles/segcam.json``, unmodified, on model-zoo's 3D segmentation bundles.

Each bundle's own inference config (copied with the ``scripts/`` it needs under ``model_zoo/<bundle>/``, with
model-zoo's licence) runs through ``python -m monai.bundle run`` with the overlay, a random initialisation of its
``network_def`` saved where the bundle loads its checkpoint (the real weights are not downloaded), and a small
synthetic case shaped like its datalist (file layout, keys, modalities, a non-trivial affine). An override file
points the bundle's dataset ids and ``output_dir`` at the case and, to keep CPU runs short, shrinks the sliding
window where the network accepts it and sets ``num_workers`` to 0. Where a bundle itself does not run on the current
MONAI/torch, the user's fix documented in ``docs/bundles.md`` is applied (column "fix" of the table).

A run counts as "ran" when it exits 0 and writes CAM NIfTIs with the original image's shape and affine.

Usage (about 15 minutes on 2 CPU cores for all bundles and both layer settings)::

    python benchmarks/bundle_sweep/run_sweep.py                      # default options of the overlay
    python benchmarks/bundle_sweep/run_sweep.py --cam_layers "['bottleneck','pre_head']"
    python benchmarks/bundle_sweep/run_sweep.py --bundles spleen_ct_segmentation --keep

The table (markdown) is printed and written to ``--table`` (default ``results<suffix>.md`` next to this script).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ZOO = HERE / "model_zoo"
OVERLAY = ROOT / "bundles" / "segcam.json"
DATA = "@@DATA@@"  # replaced by the synthetic data folder in overrides

# a non-trivial orientation (x and y flipped, like DICOM's LPS) and origin; spacings per bundle
AXES = np.diag([-1.0, -1.0, 1.0])
ORIGIN = np.array([12.5, -30.0, 7.25])

DINTS_FIX = {
    "arch_ckpt": "$torch.load(@arch_ckpt_path, map_location='cpu', weights_only=False)",
    "dints_space#device": "$torch.device('cpu')",
}
SWIN_FIX = {  # MONAI >= 1.5 has no img_size argument: the same network_def without it
    "network_def": {
        "_target_": "SwinUNETR", "spatial_dims": 3, "in_channels": 1, "out_channels": 14, "feature_size": 48,
        "use_checkpoint": False,
    }
}  # fmt: skip

VISTA3D_SMALL = {  # the full vista3d132 (218 M parameters) takes minutes per 128³ window on a CPU: 8 features
    "network_def": "$monai.networks.nets.vista3d132(encoder_embed_dim=8, in_channels=@input_channels)",
}

VISTA3D_POINTS_FIX = {  # Vista3dEvaluator.transform_points gets the affine as a torch tensor (numpy's `@` wraps it back
    # through Tensor.__array_wrap__), so its torch.from_numpy fails on torch 2.x: the user's fix gives it numpy arrays
    "points_fix": "$setattr(type(@evaluator), 'transform_points', (lambda f: lambda self, p, a: "
    "f(self, np.asarray(p), np.asarray(a)))(type(@evaluator).transform_points))",
    "initialize": ["$monai.utils.set_determinism(seed=123)", "@points_fix", "$@checkpointloader(@evaluator)"],
}


def vista3d_point_prompt(points: list, labels: list) -> dict:
    """The overrides of a point prompt for the vista3d bundle: the clicks (voxels of the original image) in its input
    dict, with the fix above."""
    image = f"{DATA}/imagesTs/ct_1.nii.gz"
    return {**VISTA3D_POINTS_FIX, "input_dict": {"image": image, "points": points, "point_labels": labels}}


@dataclass
class Bundle:
    """How one bundle is run: its config, synthetic files, the overrides pointing it at them, its checkpoint."""

    network: str
    images: dict[str, tuple[tuple[int, ...], tuple[float, ...]]]  # file (relative to the data folder) -> shape, mm
    data: dict  # overrides pointing the bundle at the data (DATA is the data folder)
    config: str = "configs/inference.json"
    checkpoint: str = "models/model.pt"
    run_id: str = "run"
    fix: dict = field(default_factory=dict)  # the user's fix for the current MONAI/torch (docs/bundles.md)
    small: dict = field(default_factory=dict)  # CPU only: a smaller window or resize
    datalist: tuple[str, dict | str] | None = None  # (file name, JSON content or text) written into the data folder
    reference: str = ""  # the file whose grid the CAMs must be on (default: the first image)
    dints: bool = False  # write a random DiNTS architecture code (models/search_code_18590.pt)


def _roi(size: int) -> dict:
    return {"inferer#roi_size": [size] * 3}


BUNDLES: dict[str, Bundle] = {
    "spleen_ct_segmentation": Bundle(
        "UNet", {"imagesTs/spleen_1.nii.gz": ((56, 48, 30), (1.2, 1.2, 2.5))}, {"dataset_dir": DATA}, small=_roi(64)
    ),
    "swin_unetr_btcv_segmentation": Bundle(
        "SwinUNETR", {"imagesTs/img0001.nii.gz": ((48, 48, 30), (1.6, 1.6, 2.5))}, {"dataset_dir": DATA},
        fix=SWIN_FIX, small=_roi(64),
    ),
    "segmentation_template": Bundle(
        "UNet", {"test_data/img0.nii.gz": ((48, 40, 32), (1.0, 1.0, 1.0))},
        {"dataset_dir": f"{DATA}/test_data"}, config="configs/inference.yaml",
    ),
    "brats_mri_segmentation": Bundle(
        "SegResNet",
        {f"BraTS19_0/BraTS19_0_{m}.nii.gz": ((56, 48, 40), (1.0, 1.0, 1.0)) for m in ("flair", "t1ce", "t1", "t2")},
        {"dataset_dir": DATA, "data_list_file_path": f"{DATA}/datalist.json"},
        datalist=("datalist.json", {"testing": [{"image": [f"BraTS19_0/BraTS19_0_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")]}]}),
        small=_roi(64),
    ),
    "wholeBody_ct_segmentation": Bundle(
        "SegResNet", {"imagesTs/s0001.nii.gz": ((48, 40, 40), (2.0, 2.0, 2.0))}, {"dataset_dir": DATA}, small=_roi(64)
    ),
    "prostate_mri_anatomy": Bundle(  # reads its datalist with pandas; KeepLargestConnectedComponentd needs skimage
        "UNet", {"test/t2.nii.gz": ((40, 40, 16), (0.8, 0.8, 2.0))}, {"dataset_dir": f"{DATA}/"},
        datalist=("test.csv", "t2\ntest/t2.nii.gz\n"), small=_roi(64),
    ),
    "pancreas_ct_dints_segmentation": Bundle(
        "DiNTS", {"imagesTs/pancreas_001.nii.gz": ((40, 40, 24), (1.5, 1.5, 2.5))},
        {"dataset_dir": DATA, "data_list_file_path": f"{DATA}/dataset_0.json"},
        config="configs/inference.yaml", fix=DINTS_FIX, small=_roi(64), dints=True,
        datalist=("dataset_0.json", {"testing": [{"image": "imagesTs/pancreas_001.nii.gz"}]}),
    ),
    "multi_organ_segmentation": Bundle(
        "DiNTS", {"img/img0001.nii.gz": ((40, 40, 24), (1.5, 1.5, 2.5))},
        {"dataset_dir": DATA, "data_list_file_path": f"{DATA}/dataset_0.json"},
        config="configs/inference.yaml", fix=DINTS_FIX, small=_roi(64), dints=True,
        datalist=("dataset_0.json", {"testing": [{"image": "img/img0001.nii.gz"}]}),
    ),
    "renalStructures_UNEST_segmentation": Bundle(
        "UNesT", {"kidney_1.nii.gz": ((48, 40, 40), (1.5, 1.5, 1.5))}, {"dataset_dir": DATA}, run_id="evaluating"
    ),
    "wholeBrainSeg_Large_UNEST_segmentation": Bundle(
        "UNesT", {"images/brain_1.nii.gz": ((64, 72, 56), (1.0, 1.0, 1.0))}, {"dataset_dir": f"{DATA}/images"},
        run_id="evaluating",
    ),
    "renalStructures_CECT_segmentation": Bundle(
        "SegResNet",
        {f"case1/{n}.nii.gz": ((40, 40, 32), (1.0, 1.0, 1.2)) for n in ("12", "22-", "32-", "merged")},
        {"dataset_dir": DATA}, run_id="inference", small=_roi(64), reference="case1/12.nii.gz",
    ),
    "pediatric_abdominal_ct_segmentation": Bundle(
        "DynUNet", {"s0001.nii.gz": ((64, 56, 24), (1.0, 1.0, 3.0)), "labels/s0001.nii.gz": ((64, 56, 24), (1.0, 1.0, 3.0))},
        {"data_list_file_path": f"{DATA}/TS_test.json"},
        config="configs/inference.yaml", checkpoint="models/dynunet_FT.pt", small=_roi(64),
        datalist=("TS_test.json", {"validation": [{"image": f"{DATA}/s0001.nii.gz", "label": f"{DATA}/labels/s0001.nii.gz"}]}),
    ),
    "spleen_deepedit_annotation": Bundle(
        "DynUNet", {"imagesTs/spleen_1.nii.gz": ((56, 48, 30), (1.2, 1.2, 2.5))}, {"dataset_dir": DATA},
        small={"spatial_size": [64, 64, 64]},
    ),
    "vista3d": Bundle(  # class prompts from the input dict; its own Vista3dEvaluator and Vista3dInferer (128³ windows)
        "VISTA3D", {"imagesTs/ct_1.nii.gz": ((64, 56, 40), (1.5, 1.5, 1.5))},
        {"input_dict": {"image": f"{DATA}/imagesTs/ct_1.nii.gz", "label_prompt": [3, 5]}}, small=VISTA3D_SMALL,
    ),
}  # fmt: skip

INIT = """
import json, sys, torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai_segcam.cam import PromptedVista3D, discover_roles, is_vista3d
parser = ConfigParser()
parser.read_config(json.loads(sys.argv[1]))
parser["bundle_root"] = "."
torch.manual_seed(0)
net = parser.get_parsed_content("network_def")
torch.save(net.state_dict(), sys.argv[2])
inferer = parser.get_parsed_content("inferer")
traced = PromptedVista3D(net) if is_vista3d(net) else net  # a promptable network's roles: those of class prompts
roles = discover_roles(traced, inferer.roi_size if isinstance(inferer, SlidingWindowInferer) else None)
print(json.dumps({"network": type(net).__name__, **roles.roles, "probe": roles.probe_shape}))
"""

DINTS_ARCH = """
import numpy as np, torch
from monai.networks.nets import TopologySearch
torch.manual_seed(0)
space = TopologySearch(channel_mul=1.0, num_blocks=12, num_depths=4, use_downsample=True, device="cpu")
node_a, code_a, code_c, code_a_max = space.decode()
torch.save({"node_a": node_a, "arch_code_a": code_a, "arch_code_c": code_c, "arch_code_a_max": code_a_max},
           "models/search_code_18590.pt")
"""


def _volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth CT-like volume: soft tissue, a brighter ellipsoid organ, noise (float32, in HU)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    organ = sum((g / r) ** 2 for g, r in zip(grid, (0.45, 0.35, 0.5))) < 1
    return (-100.0 + 180.0 * organ + 20.0 * rng.standard_normal(shape)).astype(np.float32)


def _write_case(bundle: Bundle, data: Path) -> None:
    for i, (name, (shape, spacing)) in enumerate(bundle.images.items()):
        affine = np.eye(4)
        affine[:3, :3] = AXES * np.array(spacing)
        affine[:3, 3] = ORIGIN
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        values = (_volume(shape, i) > 0).astype(np.uint8) if "label" in name or "merged" in name else _volume(shape, i)
        nib.save(nib.Nifti1Image(values, affine), str(path))
    if bundle.datalist:
        name, content = bundle.datalist
        text = content if isinstance(content, str) else json.dumps(content)
        (data / name).write_text(text.replace(DATA, str(data)))


def _env(work: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(work), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _last_error(log: str) -> str:
    """The most telling error line: the last ``XxxError: ...`` that is not a config wrapper's."""
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    specific = [line for line in errors if "Failed to evaluate" not in line and "Failed to instantiate" not in line]
    return (specific or errors or lines or ["no output"])[-1][:300]


def _classify(log: str) -> str:
    if "cam and mask must have the same number of dims" in log or ("relevance_mass" in log and "Error" in log):
        return "handler's label statistics (issue 11 item 4)"
    if "orig_keys" in log or ("Invertd" in log and "meta" in log):
        return "Invertd of the concatenated image (issue 16)"
    return ""


def _check_outputs(out: Path, reference: Path) -> tuple[int, list[str], bool, str]:
    """CAM NIfTIs written: count, layers, all on the reference grid (shape and affine), peak of the maps."""
    ref = nib.load(str(reference))
    cams = sorted(out.rglob("*_cam_*.nii.gz"))
    layers = sorted({p.name.split("_cam_")[1].split("_", 1)[1].rsplit("_class", 1)[0] for p in cams})
    on_grid = bool(cams)
    for path in cams:
        image = nib.load(str(path))
        on_grid &= image.shape[:3] == ref.shape[:3] and np.allclose(image.affine, ref.affine, atol=1e-3)
    stats = next(out.rglob("segcam_stats.csv"), None)
    peak = ""
    if stats is not None:
        rows = [r for r in csv.DictReader(stats.open()) if r.get("status") == "ok" and r.get("max")]
        peak = ", ".join(f"{r['layer']} {float(r['max']):.3g}" for r in rows if r["case"] not in ("mean", "std"))
    return len(cams), layers, on_grid, peak


def run_bundle(
    name: str, bundle: Bundle, workdir: Path, cam_args: list[str], timeout: int, extra: dict | None = None
) -> dict:
    """Copy the bundle, write its case and random checkpoint, run it with the overlay; one row of the table.

    ``extra`` overrides ids on top of the sweep's own (e.g. an even smaller window for a test).
    """
    work = workdir / name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ZOO / name, work)
    (work / "models").mkdir(exist_ok=True)
    data, out = work / "sweep_data", work / "sweep_out"
    _write_case(bundle, data)
    overrides = {**bundle.fix, **bundle.small, **bundle.data, "output_dir": str(out), "dataloader#num_workers": 0}
    overrides.update(extra or {})
    override_file = work / "sweep_override.json"
    override_file.write_text(json.dumps(overrides).replace(DATA, str(data)))
    configs = [str(work / bundle.config), str(override_file)]
    env, row = _env(work), {"bundle": name, "network": bundle.network, "fix": "yes" if bundle.fix else ""}
    if bundle.dints:
        subprocess.run([sys.executable, "-c", DINTS_ARCH], cwd=work, env=env, check=True, capture_output=True)
    init = subprocess.run([sys.executable, "-c", INIT, json.dumps(configs), bundle.checkpoint], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if init.returncode != 0:
        return {**row, "status": f"network_def failed: {_last_error(init.stderr)}", "seconds": 0}
    roles = json.loads(init.stdout.strip().splitlines()[-1])
    row["roles"] = f"`{roles.get('bottleneck')}` / `{roles['pre_head']}`"
    files = "[" + ",".join(repr(c) for c in [*configs, str(OVERLAY)]) + "]"  # the overlay last, as documented
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--run_id", bundle.run_id, "--config_file", files,
           "--bundle_root", str(work), *cam_args]  # fmt: skip
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        log, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired:
        log, code = f"timeout after {timeout} s", -1
    seconds = time.perf_counter() - start
    (work / "sweep_log.txt").write_text(log)
    count, layers, on_grid, peak = _check_outputs(out, data / (bundle.reference or next(iter(bundle.images))))
    ran = code == 0 and count > 0 and on_grid
    status = "ran" if ran else f"failed: {_classify(log) or _last_error(log)}"
    return {**row, "status": status, "cams": count, "layers": ", ".join(layers), "grid": "yes" if on_grid else "no",
            "max": peak, "seconds": round(seconds)}  # fmt: skip


def table(rows: list[dict], command: str) -> str:
    lines = [f"`{command}`", "", "| bundle | network | bottleneck / pre_head | status | CAM NIfTIs | layers | original grid "
             "| CAM max per layer | fix | s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['bundle']} | {r['network']} | {r.get('roles', '')} | {r['status']} | {r.get('cams', 0)} | "
            f"{r.get('layers', '')} | {r.get('grid', '')} | {r.get('max', '')} | {r['fix']} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=list(BUNDLES))
    parser.add_argument("--cam_layers", default=None, help="passed to the overlay, e.g. \"['bottleneck','pre_head']\"")
    parser.add_argument("--workdir", type=Path, default=None, help="where the bundles run (default: a temporary folder)")
    parser.add_argument("--table", type=Path, default=None, help="markdown table to write")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per bundle run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (outputs and logs)")
    args = parser.parse_args()
    cam_args = ["--cam_layers", args.cam_layers] if args.cam_layers else []
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segcam_sweep_"))
    rows = []
    for name in args.bundles:
        rows.append(run_bundle(name, BUNDLES[name], workdir, cam_args, args.timeout))
        print(rows[-1], flush=True)
    command = "python benchmarks/bundle_sweep/run_sweep.py" + (f" --cam_layers \"{args.cam_layers}\"" if args.cam_layers else "")
    text = table(rows, command)
    print(text)
    suffix = "_bottleneck_pre_head" if args.cam_layers else "_default"
    (args.table or HERE / f"results{suffix}.md").write_text(text + "\n")
    print(f"work folder: {workdir}" if args.keep or args.workdir else "")
    if not (args.keep or args.workdir):
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
