"""A name-by-name import weight map: which reference tensors fill which of our parameters and buffers.

A :class:`WeightMap` is built from OUR compiled model (see :mod:`.walk`) and lists, for every key of
our state dict, the reference tensors it is computed from and how. :func:`check` compares the
weight map with a checkpoint's names and shapes before any value is read and refuses, naming the first
mismatched keys, when the spec does not fit: a reference key the weight map has no place for, one the
weight map needs but the checkpoint lacks, a shape that differs, or one of our keys no entry fills.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

Shape = tuple[int, ...]
SHOWN = 8  # how many keys of each kind a refusal names


class ImportMismatch(Exception):
    """The checkpoint does not fit the spec (or is not the expected kind of checkpoint)."""


@dataclass(frozen=True)
class Entry:
    """Our state-dict key ``ours`` = ``convert(*[tensor of k for k in refs])``."""

    ours: str
    refs: tuple[str, ...]
    ref_shapes: tuple[Shape, ...]
    convert: Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Constant:
    """A reference buffer our spec fixes (a shift, a temperature): it must hold ``value``."""

    ref: str
    shape: Shape
    value: float


@dataclass
class WeightMap:
    """Every entry, constant and ignored reference key, plus our keys set without a reference
    tensor (``fixed``: our key -> value, e.g. ActNorm's ``initialized`` flag)."""

    entries: list[Entry] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)
    ignore: Callable[[str], bool] = lambda key: False

    # ---------------------------------------------------------------- building
    def add(self, ours: str, refs: Sequence[str], ref_shapes: Sequence[Shape], convert) -> None:
        self.entries.append(Entry(ours, tuple(refs), tuple(tuple(s) for s in ref_shapes), convert))

    def copy(self, ours: str, ref: str, ours_shape: Shape, ref_shape: Shape | None = None,
             convert: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """One reference tensor to one of ours: as it is (same shape), reshaped (``ref_shape``
        with as many elements), or through ``convert``."""
        ours_shape = tuple(ours_shape)
        rs = tuple(ref_shape) if ref_shape is not None else ours_shape
        if convert is None:
            convert = (lambda t: t) if rs == ours_shape else (lambda t, s=ours_shape: t.reshape(s))
        self.add(ours, [ref], [rs], convert)

    def rename(self, module: nn.Module, prefix: str, rules: Iterable[tuple[str, str]]) -> None:
        """Every parameter and buffer of ``module`` (our keys ``prefix`` + local name) whose local
        name matches one of ``rules`` (regex, replacement; first match wins) is copied from the
        reference key the replacement names, same shape; unmatched names stay unfilled (and are
        reported by :func:`check`)."""
        compiled = [(re.compile(rx), rep) for rx, rep in rules]
        for local, t in module.state_dict(keep_vars=True).items():
            for rx, rep in compiled:
                if rx.fullmatch(local):
                    self.copy(prefix + local, rx.sub(rep, local), tuple(t.shape))
                    break

    def constant(self, ref: str, shape: Shape, value: float) -> None:
        self.constants.append(Constant(ref, tuple(shape), float(value)))

    # ---------------------------------------------------------------- using
    def reference_shapes(self) -> dict[str, Shape]:
        """What the weight map expects of the checkpoint: name -> shape."""
        want: dict[str, Shape] = {}
        for e in self.entries:
            want.update(zip(e.refs, e.ref_shapes))
        for c in self.constants:
            want[c.ref] = c.shape
        return want


def _show(keys: Sequence[str], shapes: Mapping[str, Shape] | None = None) -> str:
    def one(k):
        return f"{k} {list(shapes[k])}" if shapes is not None and k in shapes else k
    head = ", ".join(one(k) for k in keys[:SHOWN])
    return head + (f", ... ({len(keys)} in all)" if len(keys) > SHOWN else "")


def check(wmap: WeightMap, have: Mapping[str, Shape], ours: Mapping[str, Shape], what: str) -> None:
    """Refuse (ImportMismatch) unless ``have`` (the checkpoint's name -> shape, ignored keys
    included) and the weight map match key for key and shape for shape, and the weight map fills every key of
    ``ours`` (our state dict's name -> shape)."""
    want = wmap.reference_shapes()
    have = {k: tuple(v) for k, v in have.items() if not wmap.ignore(k)}
    extra = [k for k in have if k not in want]
    missing = [k for k in want if k not in have]
    bad = [k for k in want if k in have and have[k] != want[k]]
    filled = {e.ours for e in wmap.entries} | set(wmap.fixed)
    unfilled = [k for k in ours if k not in filled]
    problems = []
    if bad:
        problems.append("mis-shaped: " + "; ".join(f"{k} is {list(have[k])}, the spec needs {list(want[k])}"
                                                     for k in bad[:SHOWN])
                        + (f"; ... ({len(bad)} in all)" if len(bad) > SHOWN else ""))
    if missing:
        problems.append("missing from the checkpoint: " + _show(missing, want))
    if extra:
        problems.append("in the checkpoint but not in the spec: " + _show(extra, have))
    if unfilled:
        problems.append("spec parameters no reference tensor fills: " + _show(unfilled, ours))
    if problems:
        raise ImportMismatch(f"the {what} checkpoint does not fit the spec:\n  " + "\n  ".join(problems))


@torch.no_grad()
def fill(wmap: WeightMap, read: Callable[[str], torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict computed from the reference tensors (``read(name)``), constants checked.
    Values are cast to our dtype; ``model`` supplies our keys, shapes and dtypes."""
    ours = model.state_dict()
    for c in wmap.constants:
        v = read(c.ref)
        if not v.is_meta and not torch.allclose(v.double(), torch.full_like(v.double(), c.value), rtol=1e-6, atol=1e-6):
            raise ImportMismatch(f"{c.ref} holds {v.flatten()[:4].tolist()}; the spec fixes it at {c.value}")
    out: dict[str, torch.Tensor] = {}
    cache: dict[str, torch.Tensor] = {}

    def get(k: str) -> torch.Tensor:
        if k not in cache:
            cache[k] = read(k)
        return cache[k]

    for e in wmap.entries:
        ref = ours[e.ours]
        v = e.convert(*[get(k).to(torch.float64) if get(k).is_floating_point() else get(k) for k in e.refs])
        if tuple(v.shape) != tuple(ref.shape):
            raise ImportMismatch(f"{e.ours}: converted to {list(v.shape)}, the spec needs {list(ref.shape)}")
        out[e.ours] = v.to(ref.dtype)
    for k, v in wmap.fixed.items():
        out[k] = v.to(ours[k].dtype).expand(ours[k].shape).clone()
    return out
