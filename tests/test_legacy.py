"""A state dict saved by the pre-protocol FlowModel (tests/data/legacy-keys.pt, written by that
code for tests/data/legacy-keys.flow, which has every kind of old top-level key) loads into the
plan layout through ``upgrade_state_dict`` and computes the same numbers: decode of the latents
that code encoded gives its x back, and log_prob at the same seed equals what it returned."""
from __future__ import annotations

from pathlib import Path

import torch

import augflow_dsl as af
from augflow_dsl.compiler.legacy import upgrade_state_dict
from augflow_dsl.compiler.model import Latents

DATA = Path(__file__).resolve().parent / "data"


def test_legacy_state_dict_loads_and_agrees():
    saved = torch.load(DATA / "legacy-keys.pt", weights_only=True)
    model = af.compile(DATA / "legacy-keys.flow").double()
    old = saved["state_dict"]
    assert {k.split(".")[0] for k in old} == {"dequant_q", "then", "aug_q", "steps", "prior"}
    new = upgrade_state_dict(model, old)
    model.load_state_dict(new)  # strict: every key matched, none left over
    model.eval()
    assert torch.equal(model.decode(Latents(saved["z"], saved["dropped"])), saved["x"])
    torch.manual_seed(123)
    assert torch.allclose(model.log_prob(saved["x"]), saved["log_prob_seed_123"], rtol=1e-12)
