"""State dicts saved before the one-step protocol (top-level ``dequant_q``, ``then``, ``aug_q``,
``steps``, ``prior``) -> the plan layout, where every step is ``steps.<i>`` in plan order.

Old key                   New key
``dequant_q.K``           ``steps.0.q.K``                  (the dequantizer's q-network)
``then.layers.j.K``       ``steps.<1 + j>.K``
``aug_q.K``               ``steps.<a>.q.K``                (a: the augment point's index)
``steps.k.K``             ``steps.<k + offset>.K``         (offset: steps before the stages)
``prior.K``               ``steps.<last>.K``
Keys inside a layer (``.net.``, ``.mats.0.lower``, ``.log_scale``, ...) are unchanged.
"""
from __future__ import annotations

import re


def upgrade_state_dict(model, state: dict) -> dict:
    """``state`` (a pre-protocol FlowModel state dict of the same spec) renamed for ``model``."""
    spec = model.spec
    dequantizes = spec.dequantize is not None or spec.data.bits is not None
    then = len(getattr(spec.dequantize.args, "then", ())) if spec.dequantize is not None else 0
    augment = int(dequantizes) + then  # index of the augment point, when there is one
    offset = augment + (spec.augment is not None)
    last = len(model.plan) - 1
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "dequant_q":
            new = f"steps.0.q.{rest}"
        elif head == "aug_q":
            new = f"steps.{augment}.q.{rest}"
        elif head == "prior":
            new = f"steps.{last}.{rest}"
        elif head == "then":
            j, tail = re.fullmatch(r"layers\.(\d+)\.(.*)", rest).groups()
            new = f"steps.{int(dequantizes) + int(j)}.{tail}"
        elif head == "steps":
            k, tail = rest.split(".", 1)
            new = f"steps.{int(k) + offset}.{tail}"
        else:
            new = key
        out[new] = value
    return out
