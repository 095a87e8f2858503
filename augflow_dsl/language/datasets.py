"""What is known about each data set without reading it: the registry behind ``data: {dataset: ...}``.

Pure Python (no torch): ``check`` (graph/data_audit.py) reads these facts to refuse a spec that
cannot hold its data set, and the runtime (runtime/data.py) opens exactly the names listed here.
``folder`` and ``npz`` are the user's own data, read from ``data.path`` (or ``--data PATH``): their
shape, bits and classes are known only once the files are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import did_you_mean
from .models import DataSpec, Spec

OWN_SETS = ("folder", "npz")
HOLDOUT = 0.1  # the test fraction split off by seed when the user's data gives no split


@dataclass(frozen=True)
class DatasetFacts:
    """A data set's item shape ([C, H, W] images or [D] vectors), its largest value (None:
    continuous), its number of classes (None: no labels the loader can give) and its source."""

    name: str
    shape: tuple[int, ...] | None
    max_value: int | None
    classes: int | None
    source: str

    @property
    def discrete(self) -> bool:
        return self.max_value is not None

    @property
    def min_bits(self) -> int | None:
        """The fewest bits that hold every value (digits: values 0..16 need 5)."""
        return None if self.max_value is None else max(int(self.max_value).bit_length(), 1)


DATASETS: dict[str, DatasetFacts] = {f.name: f for f in (
    DatasetFacts("cifar10", (3, 32, 32), 255, 10, "torchvision"),
    DatasetFacts("svhn", (3, 32, 32), 255, 10, "torchvision"),
    DatasetFacts("mnist", (1, 28, 28), 255, 10, "torchvision"),
    DatasetFacts("imagenet32", (3, 32, 32), 255, None, "imagenet"),
    DatasetFacts("imagenet64", (3, 64, 64), 255, None, "imagenet"),
    DatasetFacts("digits", (1, 8, 8), 16, 10, "scikit-learn"),
    # 2-D toys (runtime/toys.py), labelled by mixture component: the cell, the moon, the centre, the ring
    DatasetFacts("checkerboard", (2,), None, 8, "toy"),
    DatasetFacts("two_moons", (2,), None, 2, "toy"),
    DatasetFacts("eight_gaussians", (2,), None, 8, "toy"),
    DatasetFacts("rings", (2,), None, 4, "toy"),
    DatasetFacts("folder", None, None, None, "own"),
    DatasetFacts("npz", None, None, None, "own"),
)}


def known_datasets() -> tuple[str, ...]:
    """Every name ``data.dataset`` may take."""
    return tuple(DATASETS)


def names_of(source: str) -> tuple[str, ...]:
    """The data sets read from one source ("torchvision", "imagenet", "scikit-learn", "toy", "own")."""
    return tuple(n for n, f in DATASETS.items() if f.source == source)


def own_kind(path: str | Path) -> str:
    """``folder`` for a directory, ``npz`` for a .npz file (what ``--data PATH`` means); ValueError
    for anything else."""
    p = Path(path)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() == ".npz":
        return "npz"
    if not p.exists():
        raise ValueError(f"--data {path}: no such folder or file")
    raise ValueError(f"--data {path}: give an image folder or a .npz file")


def with_data(spec: Spec, path: str | Path | None = None) -> Spec:
    """``spec`` with its own data located: ``path`` (``--data``) replaces ``data.path`` and sets
    ``dataset`` to folder or npz by what it is; a relative ``data.path`` written in the spec is
    taken relative to the spec file. The result's ``data.path`` is absolute (or None). ValueError
    for a ``path`` that is neither a folder nor a .npz file."""
    data = spec.data
    if path is not None:
        data = data.model_copy(update={"dataset": own_kind(path), "path": str(Path(path).expanduser().resolve())})
    elif data.path is not None and data.dataset in OWN_SETS:
        p = Path(data.path).expanduser()
        if not p.is_absolute() and spec.file and not spec.file.startswith("<"):
            p = Path(spec.file).parent / p
        data = data.model_copy(update={"path": str(p.resolve())})
    else:
        return spec
    return spec.model_copy(update={"data": data})


def spec_condition(spec: Spec) -> dict[str, int | None]:
    """``{"classes": K, "vector": D}`` of the spec's ``condition:`` (None where absent): the bounds
    :func:`augflow_dsl.runtime.data.open_dataset` checks a labelled data set's y against."""
    cond = getattr(spec, "condition", None)
    out = {k: getattr(cond, k, None) for k in ("classes", "vector")}
    return {k: v if isinstance(v, int) else None for k, v in out.items()}


def data_problems(data: DataSpec, classes: int | None = None, vector: int | None = None) -> dict[str, list[str]]:
    """What a spec's ``data:`` cannot be, known without reading any file: messages keyed by the
    setting they concern ("dataset", "shape", "bits", "labels", "path"), with ``warn`` holding the
    ones that still allow check and compile (a named set at another image size). ``classes`` /
    ``vector`` are the spec's ``condition: {classes: K}`` / ``{vector: D}`` when it has one."""
    out: dict[str, list[str]] = {}

    def add(key: str, msg: str) -> None:
        out.setdefault(key, []).append(msg)

    name = data.dataset
    if name is None:
        if data.path is not None:
            add("path", "'data': 'path' needs `dataset: folder` or `dataset: npz`")
        return out
    if (classes is not None or vector is not None) and not data.labels:
        add("labels", "the spec's condition: needs a y with every x: add `labels: true` to data:")
    facts = DATASETS.get(name)
    if facts is None:
        add("dataset", f"unknown dataset '{name}'{did_you_mean(name, DATASETS)}; known datasets: {', '.join(known_datasets())}")
        return out
    if name in OWN_SETS:
        if data.path is None:
            add("warn", f"dataset: {name} reads the user's own data and names no path: give it with "
                        f"--data PATH, or add `path: \"...\"` (relative to the spec file)")
        return out
    if data.path is not None:
        add("path", f"'data': 'path' applies to dataset folder or npz only; {name} is read from "
                    f"--data-root (or $AUGFLOW_DATA): remove path")
    shape, want = tuple(data.shape), facts.shape
    if want is not None and shape != want:
        kind = "vectors" if len(want) == 1 else "images"
        if len(shape) != len(want) or (len(want) == 3 and shape[0] != want[0]):
            add("shape", f"dataset {name} holds {kind} of shape {list(want)}; shape {list(shape)} cannot "
                         f"hold them: write shape: {list(want)}")
        else:
            add("warn", f"dataset {name} holds images of shape {list(want)} and this spec's shape is "
                        f"{list(shape)}: check and compile go on, but train will refuse it")
    if facts.discrete:
        if data.bits is None:
            add("bits", f"dataset {name} is discrete (values 0..{facts.max_value}): add `bits: {facts.min_bits}`"
                        + (" (8 for 8-bit images)" if facts.min_bits != 8 else ""))
        elif 2 ** data.bits <= facts.max_value:
            add("bits", f"dataset {name} has values up to {facts.max_value}, which do not fit in bits: "
                        f"{data.bits} (values 0..{2 ** data.bits - 1}); set bits to at least {facts.min_bits}")
    elif data.bits is not None:
        add("bits", f"dataset {name} is continuous: remove bits: {data.bits}")
    if data.labels and facts.classes is None:
        add("labels", f"labels: true, but dataset {name} has no labels the loader can give; labelled sets: "
                      f"{', '.join(n for n, f in DATASETS.items() if f.classes)}, folder (a subfolder per "
                      f"class), npz (with y)")
    if classes is not None and facts.classes is not None and classes < facts.classes:
        add("labels", f"dataset {name} has {facts.classes} classes (labels 0..{facts.classes - 1}) but "
                      f"condition: says classes: {classes}; set classes: {facts.classes}")
    if vector is not None and facts.classes is not None:
        add("labels", f"dataset {name} gives class labels, but condition: says vector: {vector}; write "
                      f"condition: {{classes: {facts.classes}}}, or use an .npz with float y [N, {vector}]")
    return out


__all__ = ["DATASETS", "DatasetFacts", "HOLDOUT", "OWN_SETS", "data_problems", "known_datasets", "names_of",
           "own_kind", "spec_condition", "with_data"]
