"""The compiled plan: one record per step of the graph's model chain, what each reads resolved
from the graph's structured ``reads`` (node ids) to slots of earlier outputs; encode's latents
are what the drops and the prior scored, and decode replays them through the same inverse loop
that sampling runs."""
from __future__ import annotations

from pathlib import Path

import torch

import augflow_dsl as af
from augflow_dsl.compiler.model import Latents
from augflow_dsl.graph.builder import step_path
from augflow_dsl.graph.schema import INPUT, node
from augflow_dsl.layers.base import Step

SPECS = Path(__file__).resolve().parents[1] / "specs"


def test_reads_are_node_ids_resolved_to_earlier_slots():
    spec = af.load(SPECS / "digits-small.flow")
    g, _ = af.build_graph(spec)
    path = step_path(g)
    assert path[0] == "p/dequantize" and path[-1] == "p/prior"
    model = af.compile(spec)
    assert len(model.plan) == len(path) and all(isinstance(s.layer, Step) for s in model.plan)
    slots = {INPUT: 0} | {n: i + 1 for i, n in enumerate(path)}
    readers = 0
    for i, (n, step) in enumerate(zip(path, model.plan)):
        reads = node(g, n).reads
        assert all(r in slots and slots[r] <= i for r in reads), (n, reads)  # only earlier outputs
        assert step.reads == tuple(slots[r] for r in reads)
        readers += bool(reads)
    # digits-small: one block of 3 units, cross-unit couplings after units 1 and 2 read 1 and 2 earlier outputs
    assert readers == 2 and sorted(len(s.reads) for s in model.plan if s.reads) == [1, 2]
    assert all(step.save == any(i + 1 in s.reads for s in model.plan) for i, step in enumerate(model.plan))


def test_latents_replay_and_partial_sampling(seed):
    model = af.compile(SPECS / "digits-small.flow").double()
    x = torch.randint(0, 32, (3, 1, 8, 8)).double()
    model.initialize(x)
    model.eval()
    latents = model.encode(x)
    assert len(latents.dropped) == 1 and latents.z.shape == (3, 16, 2, 2), f"seed {seed}"
    assert torch.equal(model.decode(latents), x), f"seed {seed}"
    assert model.draws.tape is None and not model.draws.centre, "a pass leaves the draws as it found them"
    # without the dropped part it is sampled (at the temperature): a valid image, generally not x
    y = model.decode(Latents(latents.z, []), temperature=0.5)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 31, f"seed {seed}"
