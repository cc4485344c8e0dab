# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``applies_sigmoid`` on instantiated MONAI transforms and on raw bundle config content."""

from __future__ import annotations

import pytest
from monai.transforms import Activations, Activationsd, AsDiscreted, Compose, EnsureTyped

from monai_segcam.utils import applies_sigmoid


@pytest.mark.parametrize(
    "postprocessing, expected",
    [
        (Compose([EnsureTyped("pred"), Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]), True),
        (Compose([Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True)]), False),
        (Compose([Compose([Activations(sigmoid=True)])]), True),  # nested
        (Activationsd(["pred", "label"], sigmoid=[False, True]), True),
        (Activations(sigmoid=False), False),
        (None, False),
        ({"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}]}, True),
        ([{"_target_": "monai.transforms.Activations", "sigmoid": True}], True),
        ({"_target_": "Activationsd", "keys": "pred", "softmax": True}, False),
        ({"_target_": "Activationsd", "keys": "pred", "sigmoid": "@use_sigmoid"}, False),  # a reference: undecided
        ({"_target_": "Lambdad", "keys": "pred", "sigmoid": True}, False),  # not an activation transform
    ],
)
def test_applies_sigmoid(postprocessing, expected):
    assert applies_sigmoid(postprocessing) is expected
