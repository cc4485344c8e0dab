# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The README's main command (the demo bundle's ``inference.json``) writes the review report, with the CAM handler's
statistics, and the README's screenshots of it are what a browser shows of that output.

Regenerate the screenshots with ``SEGCAM_UPDATE_FIGURES=1 pytest tests/report/test_report_demo_bundle.py``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_helpers import Browser, screenshot, settle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "segcam_demo"
FIGURES = {name: REPO / "docs" / "figures" / f"report_{name}.png" for name in ("index", "case")}
CASES = ["image000", "image001", "image002"]


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> tuple[Path, str]:
    """The README's command, from the bundle folder, into a temporary output folder."""
    out = tmp_path_factory.mktemp("eval")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    done = subprocess.run([*command, "--output_dir", str(out)], cwd=BUNDLE, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out, done.stdout + done.stderr


@pytest.mark.slow
def test_demo_command_writes_the_report(demo_output):
    out, log = demo_output
    assert f"review report (open in a browser): {out / 'report' / 'index.html'}" in log
    with open(out / "report" / "report.json", encoding="utf-8") as stream:
        cases = json.load(stream)["cases"]
    assert [case["name"] for case in cases] == CASES
    with open(out / "segcam_stats.csv", newline="") as stream:
        rows = {(r["case"], r["layer"], r["class"]): r for r in csv.DictReader(stream) if r["status"] == "ok"}
    for case in cases:
        assert len(case["maps"]) == 4 and case["dice"] == {}  # no label in inference.json
        for entry in case["maps"]:
            row = rows[(case["name"], entry["layer"], str(entry["class"]))]
            assert entry["stats_from"] == "rows"
            assert entry["relevance_mass_region"] == pytest.approx(float(row["relevance_mass_region"]))
            assert entry["flagged"] == (float(row["relevance_mass_region"]) < 0.5)
    # the bottleneck's map of the small organ lies mostly outside it in every case; pre_head's maps inside
    flagged = {(e["layer"], e["class"]) for case in cases for e in case["maps"] if e["flagged"]}
    assert flagged == {("bottleneck", 2)}


def screenshots(report: Path) -> dict[str, np.ndarray]:
    """The README's two pictures: the index with the flagged map's statistics, and the flagged map of image000."""
    browser = Browser()
    try:
        page = browser.open(report / "index.html", width=1240, height=430)
        page.select_option("#map", label="bottleneck · hirescam · class 2")
        pictures = {"index": screenshot(page)}
        page.click("#cases a[href='cases/image000.html'] >> nth=1")
        page.wait_for_selector("#viewer[data-rendered]")
        page.set_viewport_size({"width": 1300, "height": 790})
        settle(page, lambda: page.click("table.maps tbody tr[data-map='cam1']"))  # bottleneck, class 2: flagged
        settle(page, lambda: page.click("#peak"))
        pictures["case"] = screenshot(page)
        assert browser.errors == []
    finally:
        browser.close()
    return pictures


@pytest.mark.slow
def test_readme_screenshots_show_the_commands_report(demo_output):
    out, _ = demo_output
    pictures = screenshots(out / "report")
    for name, picture in pictures.items():
        if os.environ.get("SEGCAM_UPDATE_FIGURES"):
            Image.fromarray(np.rint(picture * 255).astype(np.uint8)).save(FIGURES[name], optimize=True)
        committed = np.asarray(Image.open(FIGURES[name]).convert("RGB"), dtype=np.float64) / 255
        assert committed.shape == picture.shape and np.abs(committed - picture).mean() < 0.01, name
