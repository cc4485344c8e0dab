# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""make_baseline: the one baseline of the occlusion/channel explainers and the deletion/insertion curves."""

from __future__ import annotations

import pytest
import torch

from monai_segcam.metrics import PerturbationBaseline, gaussian_blur
from monai_segcam.utils.baselines import Baseline, make_baseline


def test_every_baseline_against_its_closed_form():
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float64).view(2, 3, 4, 5, 6)
    torch.testing.assert_close(make_baseline(x, 2.5), torch.full_like(x, 2.5))
    torch.testing.assert_close(make_baseline(x, "zero"), torch.zeros_like(x))
    mean = make_baseline(x, "mean")
    for b in range(2):
        for c in range(3):
            assert torch.allclose(mean[b, c], x[b, c].mean())
    mean[0, 0, 0, 0, 0] = -1  # a copy, not a view of the mean
    assert make_baseline(x, "mean")[0, 0, 0, 0, 1] != -1
    torch.testing.assert_close(make_baseline(x, "blur", 1.5), gaussian_blur(x, 1.5))
    torch.testing.assert_close(make_baseline(x, "blur", (0.0, 1.0, 2.0)), gaussian_blur(x, (0.0, 1.0, 2.0)))
    given = torch.rand(1, 3, 1, 1, 1)
    torch.testing.assert_close(make_baseline(x, given), given.double().expand_as(x))
    assert PerturbationBaseline is Baseline  # the metrics' name of the same options


def test_bad_baselines_raise_clear_errors():
    x = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="blur"):
        make_baseline(x, "blurry")
    with pytest.raises(ValueError, match="finite"):
        make_baseline(x, float("inf"))
    with pytest.raises(ValueError, match="blur_sigma"):
        make_baseline(x, "blur", 0.0)
    with pytest.raises(TypeError, match="number"):
        make_baseline(x, None)  # type: ignore[arg-type]
