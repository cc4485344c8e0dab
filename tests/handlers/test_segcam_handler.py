# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMHandler on a real SupervisedEvaluator over NIfTI files: outputs, files, CSV, errors, resume, training."""

from __future__ import annotations

import csv
import os
import random

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler
from monai.networks.nets import UNet
from monai.transforms import Compose, DivisiblePadd, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, Spacingd

from monai_segcam import SegCAM
from monai_segcam.handlers import CSV_COLUMNS, SegCAMHandler

AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 0, 1.0, -8.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])


def write_cases(folder, n: int = 3, shape=(16, 14, 12), nan_case: int | None = None) -> list[dict[str, str]]:
    """``n`` NIfTI image/label pairs with a bright box (the label) on noise; case ``nan_case`` has a NaN voxel."""
    rng = np.random.default_rng(7)
    files = []
    for i in range(n):
        image = rng.normal(0, 0.1, shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[3 + i : 9 + i, 4:10, 3:8] = 1
        image[label > 0] += 1.0
        if i == nan_case:
            image[0, 0, 0] = np.nan
        paths = {"image": os.path.join(folder, f"case {i}.nii.gz")}
        paths["label"] = os.path.join(folder, f"case {i}_seg.nii.gz")
        nib.save(nib.Nifti1Image(image, AFFINE), paths["image"])
        nib.save(nib.Nifti1Image(label, AFFINE), paths["label"])
        files.append(paths)
    return files


def make_net(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)


def preprocessing() -> Compose:
    keys = ["image", "label"]
    return Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            Orientationd(keys, "RAS", labels=None),
            Spacingd(keys, (2.0, 2.0, 2.0), mode=("bilinear", "nearest")),
            DivisiblePadd(keys, k=4),
        ]
    )


def make_evaluator(files, net, handlers, inverted: bool = True) -> SupervisedEvaluator:
    pre = preprocessing()
    post = None
    if inverted:
        post = Invertd(["pred", "cam"], pre, orig_keys="image", nearest_interp=False, allow_missing_keys=True)
    loader = DataLoader(Dataset(files, pre), batch_size=1, num_workers=0)
    return SupervisedEvaluator(
        torch.device("cpu"), loader, net, postprocessing=post, val_handlers=handlers, decollate=True
    )


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_cam_in_output_files_and_csv(tmp_path):
    files = write_cases(tmp_path, n=2)
    net = make_net()
    out = tmp_path / "cams"
    handler = SegCAMHandler(classes=[1], output_dir=out, save_png=True, tensorboard_dir=tmp_path / "tb")
    evaluator = make_evaluator(files, net, [handler])
    evaluator.run()

    item = evaluator.state.output[0]  # the last batch, decollated and inverted
    original = nib.load(files[1]["image"])
    assert tuple(item["cam"].shape) == (1, *original.shape)
    np.testing.assert_allclose(item["cam"].affine.numpy(), original.affine, atol=1e-5)

    for i in range(2):
        path = out / f"case_{i}_cam_hirescam_pre_head_class1.nii.gz"
        saved = nib.load(path)
        assert saved.shape == original.shape
        np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-5)
        assert (out / f"case_{i}_cam_hirescam_pre_head_class1.png").stat().st_size > 0
    np.testing.assert_allclose(
        nib.load(out / "case_1_cam_hirescam_pre_head_class1.nii.gz").get_fdata(), item["cam"][0].numpy(), atol=1e-5
    )
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    assert not [name for name in os.listdir(out) if name.startswith(".tmp_")]

    rows = read_csv(out / "segcam_stats.csv")
    assert list(rows[0]) == list(CSV_COLUMNS)
    cases = [row for row in rows if row["status"] == "ok"]
    assert [row["case"] for row in cases] == ["case_0", "case_1"]
    assert {row["case"] for row in rows if row["status"] == "summary"} == {"mean", "std"}
    for row in cases:
        assert 0.0 <= float(row["relevance_mass_label"]) <= 1.0 and float(row["max"]) >= float(row["mean"]) >= 0.0
    mean_row = next(row for row in rows if row["case"] == "mean")
    assert mean_row["n"] == "2"
    assert float(mean_row["max"]) == pytest.approx(np.mean([float(row["max"]) for row in cases]), rel=1e-6)


def test_relative_output_dir(tmp_path, monkeypatch):
    """A relative output_dir (bundles use './eval') holds the files directly, not in a nested copy of itself."""
    files = write_cases(tmp_path, n=1)
    monkeypatch.chdir(tmp_path)
    make_evaluator(files, make_net(), [SegCAMHandler(classes=[1], output_dir="rel", save_png=True)]).run()
    written = sorted(p.relative_to(tmp_path / "rel").as_posix() for p in (tmp_path / "rel").rglob("*") if p.is_file())
    assert written == ["case_0_cam_hirescam_pre_head_class1.nii.gz", "case_0_cam_hirescam_pre_head_class1.png", "segcam_stats.csv"]


def test_cam_equals_direct_segcam_on_the_network_input(tmp_path):
    files = write_cases(tmp_path, n=1)
    net = make_net()
    seen = {}
    handler = SegCAMHandler(classes=[0, 1], layers=["pre_head", "bottleneck"])
    evaluator = make_evaluator(files, net, [handler], inverted=False)

    from monai.engines.utils import IterationEvents

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def keep(engine):
        seen.update(engine.state.output)

    evaluator.run()
    expected = SegCAM(net, layers=["pre_head", "bottleneck"])(seen["image"], classes=[0, 1], pred=seen["pred"])
    for layer in ("pre_head", "bottleneck"):
        cam = seen[f"cam_{layer}"]
        assert cam.shape == (1, 2, *seen["image"].shape[2:])
        torch.testing.assert_close(cam.as_tensor(), expected[layer].as_tensor())
        assert cam.is_batch and torch.equal(cam.affine, seen["image"].affine)


def test_handler_follows_the_evaluators_amp(tmp_path):
    """CAMs are computed as the evaluator predicts: MONAI's ``amp=True`` evaluator autocasts CUDA operations only, so
    on the CPU its prediction and the CAMs stay float32; ``amp=True`` given to the handler autocasts (bfloat16)."""
    files = write_cases(tmp_path, n=1)
    cams = {}
    for amp, explicit in ((True, None), (False, None), (False, True)):
        handler = SegCAMHandler(classes=[1], layers="bottleneck", amp=explicit)
        loader = DataLoader(Dataset(files, preprocessing()), batch_size=1, num_workers=0)
        evaluator = SupervisedEvaluator(torch.device("cpu"), loader, make_net(), val_handlers=[handler], amp=amp)
        evaluator.run()
        cams[(amp, explicit)] = evaluator.state.output[0]["cam"]
        assert handler.cam is not None and handler.cam.engine.terms.amp is bool(explicit)
    torch.testing.assert_close(cams[(True, None)], cams[(False, None)], rtol=0, atol=0)  # CPU: float32 as without amp
    mixed, full = cams[(False, True)].flatten(), cams[(False, None)].flatten()
    assert not torch.equal(mixed, full)  # bfloat16 autocast changes the map slightly...
    assert torch.corrcoef(torch.stack([mixed, full]))[0, 1] > 0.99  # ...but not its pattern


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the evaluator's float16 autocast)")
def test_handler_follows_the_evaluators_cuda_amp(tmp_path):
    """On a CUDA network an ``amp=True`` evaluator predicts under float16 autocast, and so do its CAMs."""
    files = write_cases(tmp_path, n=1)
    handler = SegCAMHandler(classes=[1], layers="bottleneck")
    loader = DataLoader(Dataset(files, preprocessing()), batch_size=1, num_workers=0)
    device = torch.device("cuda")
    evaluator = SupervisedEvaluator(device, loader, make_net().to(device), val_handlers=[handler], amp=True)
    evaluator.run()
    assert handler.cam is not None and handler.cam.engine.terms.amp
    assert torch.isfinite(evaluator.state.output[0]["cam"]).all()


def test_skip_records_failing_case_and_raise_names_it(tmp_path):
    files = write_cases(tmp_path, n=3, nan_case=1)
    out = tmp_path / "cams"
    handler = SegCAMHandler(classes=1, output_dir=out, on_error="skip")
    make_evaluator(files, make_net(), [handler]).run()
    rows = read_csv(out / "segcam_stats.csv")
    status = {row["case"]: row["status"] for row in rows}
    assert status == {"case_0": "ok", "case_1": "failed", "case_2": "ok", "mean": "summary", "std": "summary"}
    assert "NaN" in next(row["error"] for row in rows if row["case"] == "case_1")
    assert "case_1" in handler.failed
    assert not (out / "case_1_cam_hirescam_pre_head_class1.nii.gz").exists()
    assert (out / "case_2_cam_hirescam_pre_head_class1.nii.gz").exists()
    assert next(row["n"] for row in rows if row["case"] == "mean") == "2"

    strict = SegCAMHandler(classes=1, output_dir=tmp_path / "strict")
    with pytest.raises(RuntimeError, match="case_1"):
        make_evaluator(files, make_net(), [strict]).run()


def test_resume_skips_existing_outputs(tmp_path):
    files = write_cases(tmp_path, n=2)
    out = tmp_path / "cams"
    make_evaluator(files, make_net(), [SegCAMHandler(classes=1, output_dir=out)]).run()
    first, second = (out / f"case_{i}_cam_hirescam_pre_head_class1.nii.gz" for i in range(2))
    stamp = first.stat().st_mtime_ns
    second.unlink()
    before = read_csv(out / "segcam_stats.csv")

    handler = SegCAMHandler(classes=1, output_dir=out, resume=True)
    make_evaluator(files, make_net(), [handler]).run()
    assert first.stat().st_mtime_ns == stamp  # not recomputed
    assert second.exists()
    after = read_csv(out / "segcam_stats.csv")
    assert [(row["case"], row["status"]) for row in after] == [(row["case"], row["status"]) for row in before]
    assert after[0]["max"] == before[0]["max"]  # resumed case's row restored from the previous CSV
    with pytest.raises(ValueError, match="resume"):
        SegCAMHandler(resume=True)


def test_case_selection_and_max_cases(tmp_path):
    files = write_cases(tmp_path, n=3)
    out = tmp_path / "cams"
    handler = SegCAMHandler(classes=1, output_dir=out, cases=lambda name: name != "case_0", max_cases=1)
    make_evaluator(files, make_net(), [handler]).run()
    assert sorted(name for name in os.listdir(out) if name.endswith(".nii.gz")) == [
        "case_1_cam_hirescam_pre_head_class1.nii.gz"
    ]
    every_other = SegCAMHandler(classes=1, output_dir=tmp_path / "iter", interval=2, epoch_level=False)
    make_evaluator(files, make_net(), [every_other]).run()
    assert [row["case"] for row in every_other.rows if row["status"] == "ok"] == ["case_1"]  # iteration 2 only
    with pytest.raises(ValueError, match="save_rank"):
        make_evaluator(files, make_net(), [SegCAMHandler(save_rank=1)]).run()


def _train(files, with_cam: bool, tmp_path) -> tuple[UNet, SupervisedEvaluator]:
    net = make_net(1)
    handler = SegCAMHandler(classes=1, output_dir=tmp_path / "val", epoch_subdir=True, interval=2)
    handlers = [handler] if with_cam else []
    evaluator = make_evaluator(files, net, handlers)
    pre = preprocessing()
    loader = DataLoader(Dataset(files, pre), batch_size=1, shuffle=False, num_workers=0)
    trainer = SupervisedTrainer(
        torch.device("cpu"),
        max_epochs=2,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.CrossEntropyLoss(),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["image"], batch["label"][:, 0].long()),
        train_handlers=[ValidationHandler(interval=1, validator=evaluator, epoch_level=True)],
    )
    trainer.run()
    return net, evaluator


def test_validation_handler_does_not_change_training(tmp_path):
    files = write_cases(tmp_path, n=2)
    reference, _ = _train(files, False, tmp_path)
    torch.manual_seed(0)
    explained, _ = _train(files, True, tmp_path)
    for (name, a), b in zip(reference.state_dict().items(), explained.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert sorted(os.listdir(tmp_path / "val")) == ["epoch_0002"]  # interval=2: only the second validation
    assert (tmp_path / "val" / "epoch_0002" / "segcam_stats.csv").exists()


def _rng_after_run(files, net, handlers) -> tuple:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    make_evaluator(files, net, handlers).run()  # the DataLoader itself draws from torch's RNG
    return torch.get_rng_state(), np.random.get_state()[1], random.getstate()


def test_no_rng_use_no_grad_writes_mode_restored(tmp_path):
    files = write_cases(tmp_path, n=1)
    net = make_net()
    net.train()
    reference = _rng_after_run(files, net, [])
    explained = _rng_after_run(files, net, [SegCAMHandler(classes=1, output_dir=tmp_path / "cams", save_png=True)])
    assert (tmp_path / "cams" / "case_0_cam_hirescam_pre_head_class1.png").exists()
    assert torch.equal(reference[0], explained[0])
    assert np.array_equal(reference[1], explained[1]) and reference[2] == explained[2]
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())


def test_batch_of_different_sizes_padded_by_collation(tmp_path):
    """Two cases of different sizes in one batch, padded to a common size by ``pad_list_data_collate``: each CAM is
    computed on the padded batch and saved on its own case's original grid (the padding is inverted per item)."""
    from monai.data import pad_list_data_collate

    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir(), large.mkdir()
    files = [write_cases(small, n=1, shape=(12, 14, 10))[0], write_cases(large, n=1, shape=(18, 12, 16))[0]]
    files[1] = {key: str(tmp_path / f"big{os.path.basename(path)}") for key, path in files[1].items()}
    for key in ("image", "label"):
        os.replace(large / os.path.basename(files[1][key]).removeprefix("big"), files[1][key])
    pre = preprocessing()
    loader = DataLoader(Dataset(files, pre), batch_size=2, num_workers=0, collate_fn=pad_list_data_collate)
    out = tmp_path / "cams"
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), loader, make_net(), decollate=True,
        postprocessing=Invertd(["pred", "cam"], pre, orig_keys="image", nearest_interp=False),
        val_handlers=[SegCAMHandler(classes=[1], region="all", output_dir=out)],
    )  # fmt: skip
    evaluator.run()
    for case in files:
        original = nib.load(case["image"])
        name = os.path.basename(case["image"]).removesuffix(".nii.gz").replace(" ", "_")
        saved = nib.load(out / f"{name}_cam_hirescam_pre_head_class1.nii.gz")
        assert saved.shape == original.shape
        np.testing.assert_allclose(saved.affine, original.affine, atol=1e-5)
        assert np.isfinite(saved.get_fdata()).all() and saved.get_fdata().max() > 0


@pytest.mark.parametrize(
    "label, reason",
    [
        (lambda label: label[:, :, :-2], "another grid"),  # cropped: not on the image's grid
        (lambda label: label[:, 0], "not channel first"),  # loaded but not transformed like the image
        (lambda label: label.float() * 0.5, "non-integer values"),  # not a label map nor one-hot
        (lambda label: ["case_seg.nii.gz"] * label.shape[0], "not an image"),  # a file name never loaded
    ],
)
def test_unusable_label_leaves_label_statistics_empty_and_says_so_once(tmp_path, label, reason, caplog):
    """A label the statistics cannot use never stops the CAMs: the files are written, the label columns are left
    empty and one warning per run says why."""
    files = write_cases(tmp_path, n=2)
    out = tmp_path / "cams"

    def seen(output):
        return output["image"], output["pred"], label(output["label"])

    handler = SegCAMHandler(classes=[1], output_dir=out, output_transform=seen)  # MONAI-style output_transform
    with caplog.at_level("WARNING"):
        make_evaluator(files, make_net(), [handler], inverted=False).run()
    rows = [row for row in read_csv(out / "segcam_stats.csv") if row["status"] == "ok"]
    assert [row["case"] for row in rows] == ["case_0", "case_1"]
    for row in rows:
        assert row["relevance_mass_label"] == row["pointing_game_label"] == "" and float(row["max"]) > 0
        assert (out / f"{row['case']}_cam_hirescam_pre_head_class1.nii.gz").exists()
    messages = [r.getMessage() for r in caplog.records if "label statistics left empty" in r.getMessage()]
    assert len(messages) == 1 and reason in messages[0], messages
