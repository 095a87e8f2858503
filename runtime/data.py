"""Data sets and batch streams for the training runtime.

``open_dataset`` turns a spec's ``data: {shape, bits, dataset}`` into train / test sets whose items
are single tensors (uint8 ``[C, H, W]`` for images, float32 ``[D]`` for vector data) and checks them
against the spec; with ``data: {labels: true}`` an item is a pair ``(x, y)``, ``y`` an int64 label,
and a batch is ``(x [N, ...], y [N])`` (``runtime.batches.split`` splits either form). The user's own data
(``dataset: folder`` / ``npz``) are read by runtime/data_files.py. ``make_batches`` /
:class:`BatchStream` yield the batches of one epoch:

* the order of epoch ``e`` is ``randperm(n)`` from a generator seeded by ``(seed, e)`` (never the
  global RNG); global batch ``t`` is ``perm[t*batch:(t+1)*batch]`` (drop_last);
* rank ``r`` of ``world`` gets the contiguous slice ``[r*batch/world, (r+1)*batch/world)`` of each
  global batch, so the ranks together see exactly the 1-process batch;
* ``start`` skips the first global batches of the epoch without loading them (resume);
* images stay uint8 until the model: optional worker processes load index batches, the batch is
  pinned and moved with ``non_blocking``, and augmentation runs batched on the target device with
  parameters drawn from a generator seeded by ``(seed, epoch, global batch)`` -- for every item a
  function of (seed, epoch, position) alone, whatever the number of workers or ranks.

Augmentation ``[flip, translate]`` is DenseFlow's (experiments/image/data/data.py:65-70 of
matejgrcic/DenseFlow): RandomHorizontalFlip(0.5); Pad(ceil(0.04 H), edge); RandomAffine(degrees=0,
translate=(0.04, 0.04)) with fill 0; CenterCrop(H) -- reproduced exactly, one gather per batch.
"""
from __future__ import annotations

import hashlib
import importlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from augflow_dsl.language.datasets import DATASETS, OWN_SETS, known_datasets, names_of
from augflow_dsl.language.models import DataSpec

from .batches import Batch, split, stack
from .data_files import DataError, check_labels, check_vectors, open_own

TORCHVISION_SETS = names_of("torchvision")
IMAGENET_SETS = names_of("imagenet")
EMBEDDED_SETS = names_of("scikit-learn")
AUGMENTATIONS = ("flip", "translate")
TRANSLATE = 0.04  # DenseFlow data.py:65-70: Pad(ceil(0.04 H)), RandomAffine(translate=(0.04, 0.04))
DIGITS_TRAIN = 1500  # of scikit-learn's 1,797 digits; the other 297 are the test set
IMAGENET_TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
IMAGENET_VAL_FILE = "val_data.npz"


@dataclass
class DataSource:
    """An opened data set: items are uint8 [C, H, W] images or float32 [D] vectors, or (item,
    int64 label) pairs when ``labels`` (``classes``: the number of classes, labels 0..classes-1)."""

    name: str
    train: Dataset
    test: Dataset
    shape: tuple[int, ...]
    bits: int | None
    labels: bool = False
    classes: int | None = None


class TensorItems(Dataset):
    """A data set held in one tensor [N, ...] (and labels [N] when given); ``__getitems__``
    fetches a batch with one gather: ``x`` or ``(x, y)``."""

    def __init__(self, data: Tensor, labels: Tensor | None = None) -> None:
        self.data = data
        self.labels = labels

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> Batch:
        return self.data[i] if self.labels is None else (self.data[i], self.labels[i])

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.data[index] if self.labels is None else (self.data[index], self.labels[index])


# ----------------------------------------------------------------------------------------------
# Opening data sets


def default_data_root() -> Path:
    """``$AUGFLOW_DATA`` if set, else ``~/.cache/augflow-dsl/data``."""
    env = os.environ.get("AUGFLOW_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "augflow-dsl" / "data"


def open_dataset(data: DataSpec, root: str | Path | None = None, download: bool = False,
                 seed: int = 0, *, classes: int | None = None, vector: int | None = None) -> DataSource:
    """Open the data set the spec's ``data:`` names and check it against the spec.

    ``root`` holds the downloadable and local sets (default :func:`default_data_root`); only the
    torchvision sets are ever downloaded, and only when ``download`` is set. ``seed`` fixes the
    digits train/test split, the split of the user's data that come without one and the toy sets'
    points. ``data.path`` (folder, npz) is read as given: resolve it first with
    :func:`~augflow_dsl.language.datasets.with_data`. With ``data.labels`` the items are (x, y)
    pairs; ``classes`` / ``vector`` (the spec's ``condition: {classes: K}`` / ``{vector: D}``,
    :func:`~augflow_dsl.language.datasets.spec_condition`) are checked against the y. Raises
    :class:`DataError`.
    """
    name = data.dataset
    if name is None:
        raise DataError(f"the spec's data: names no dataset; add `dataset: <name>` (known: "
                        f"{', '.join(known_datasets())}), or give your own data with --data PATH")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
    labels = data.labels
    if labels and name not in OWN_SETS and DATASETS[name].classes is None:
        raise DataError(f"the spec's data: says labels: true, but dataset {name} has no labels the loader can "
                        f"give; remove labels (or use a labelled set: see `augflow-dsl check`)")
    root = Path(root).expanduser() if root is not None else default_data_root()
    y_train = y_test = None
    n_classes = DATASETS[name].classes
    shown = name
    if name in OWN_SETS:
        own = open_own(name, data.path, tuple(data.shape), _generator(seed, "holdout"))
        train, test, y_train, y_test, n_classes = own.train, own.test, own.y_train, own.y_test, own.classes
        shown = f"{name} {data.path}"
        if labels and y_train is None:
            raise DataError(f"the spec's data: says labels: true, but {data.path} has no labels: "
                            + ("put the images of each class in a subfolder of their own" if name == "folder"
                               else "save them as y (and y_test) in the .npz"))
    elif name in TORCHVISION_SETS:
        (train, y_train), (test, y_test) = _torchvision_set(name, root, download)
    elif name in IMAGENET_SETS:
        train, test = _imagenet(name, root)
    elif name == "digits":
        train, test, y_train, y_test = _digits(seed)
    else:
        toys = _toys()
        if labels:
            (train, y_train), (test, y_test) = (toys.toy_split(name, s, seed, labels=True) for s in ("train", "test"))
        else:
            train, test = toys.toy_split(name, "train", seed), toys.toy_split(name, "test", seed)
    _check_against_spec(shown, data, train, test)
    if not labels:
        return DataSource(name, TensorItems(train), TensorItems(test), tuple(data.shape), data.bits)
    if classes is not None:
        check_labels(torch.cat([y_train, y_test]), classes, f"dataset {shown}")
    if vector is not None:
        check_vectors(torch.cat([y_train, y_test]), vector, f"dataset {shown}")
    return DataSource(name, TensorItems(train, y_train), TensorItems(test, y_test), tuple(data.shape), data.bits,
                      labels=True, classes=classes if classes is not None else n_classes)


def _toys() -> Any:
    """runtime/toys.py, imported only when needed."""
    return importlib.import_module(f"{__package__}.toys")


def _torchvision_set(name: str, root: Path, download: bool) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """CIFAR-10, SVHN or MNIST through torchvision: (uint8 images [N, C, H, W], int64 labels [N]) of
    the train and the test split."""
    from torchvision import datasets  # torchvision is slow to import: only when it is needed

    where = {"cifar10": root / "cifar-10-batches-py", "svhn": root,
             "mnist": root / "MNIST" / "raw"}[name]
    if download:
        root.mkdir(parents=True, exist_ok=True)

    def split(train: bool) -> tuple[Tensor, Tensor]:
        try:
            if name == "cifar10":
                ds = datasets.CIFAR10(str(root), train=train, download=download)
                return (torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))),
                        torch.as_tensor(ds.targets, dtype=torch.long))
            if name == "svhn":
                ds = datasets.SVHN(str(root), split="train" if train else "test", download=download)
                return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.as_tensor(ds.labels, dtype=torch.long)
            ds = datasets.MNIST(str(root), train=train, download=download)
            return ds.data.unsqueeze(1).contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)
        except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
            if download:
                raise DataError(f"could not download or read {name} into {where}: {e}") from None
            raise DataError(f"{name} was not found (or is incomplete or corrupted) in {where}; "
                            f"run again with --download to fetch it there, or point --data-root "
                            f"(or $AUGFLOW_DATA) at a folder that has it") from None

    return split(True), split(False)


def _imagenet(name: str, root: Path) -> tuple[Tensor, Tensor]:
    """Downsampled ImageNet (Chrabaszcz et al. 2017): npz batches, key 'data', uint8 rows in CHW
    order; read from ``root/<name>/``, never downloaded."""
    size = int(name.removeprefix("imagenet"))
    folder = root / name
    missing = [f for f in IMAGENET_TRAIN_FILES + (IMAGENET_VAL_FILE,) if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{name} is not in {folder} (missing: {', '.join(missing)}); it is never downloaded "
            f"automatically: get Imagenet{size}_train_npz and Imagenet{size}_val_npz from "
            f"https://image-net.org/download-images (Chrabaszcz et al. 2017) and put "
            f"train_data_batch_1.npz .. train_data_batch_10.npz and val_data.npz in {folder}")

    def read(files: Sequence[str]) -> Tensor:
        parts = []
        for f in files:
            path = folder / f
            try:
                with np.load(path) as npz:
                    rows = npz["data"]
            except (OSError, ValueError, KeyError) as e:
                raise DataError(f"cannot read {path} as a downsampled-ImageNet batch "
                                f"(an .npz with key 'data'): {e}") from None
            if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * size * size:
                raise DataError(f"{path}: 'data' must be uint8 rows of 3*{size}*{size} = "
                                f"{3 * size * size} values; got {rows.dtype} {list(rows.shape)}")
            parts.append(torch.from_numpy(rows).view(-1, 3, size, size))
        return torch.cat(parts)

    return read(IMAGENET_TRAIN_FILES), read((IMAGENET_VAL_FILE,))


def _digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's embedded 8x8 digits (values 0..16) as uint8 [N, 1, 8, 8] and their int64
    labels 0..9; a fixed split by ``seed``: 1,500 train, 297 test (train, test, y_train, y_test)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(images.shape[0], generator=_generator(seed, "digits-split"))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return images[tr].contiguous(), images[te].contiguous(), labels[tr], labels[te]


def _check_against_spec(name: str, data: DataSpec, train: Tensor, test: Tensor) -> None:
    """Refuse a data set whose item shape or values do not fit the spec's ``data:``."""
    shape = tuple(train.shape[1:])
    if tuple(data.shape) != shape:
        raise DataError(f"dataset {name} has items of shape {list(shape)} but the spec's data: "
                        f"says shape {list(data.shape)}; make them agree")
    if train.dtype == torch.uint8:
        if data.bits is None:
            raise DataError(f"dataset {name} holds discrete images (uint8) but the spec's data: "
                            f"gives no bits; add `bits: <n>` (8 for 8-bit images)")
        top = max(int(train.max()), int(test.max()) if test.numel() else 0)
        if top >= 2 ** data.bits:
            raise DataError(f"dataset {name} has values up to {top}, which do not fit in the "
                            f"spec's bits: {data.bits} (needs max < {2 ** data.bits}); "
                            f"set bits to at least {top.bit_length()}")
    elif data.bits is not None:
        raise DataError(f"dataset {name} is continuous ({train.dtype}) but the spec's data: "
                        f"says bits: {data.bits}; remove bits for continuous data")


# ----------------------------------------------------------------------------------------------
# Deterministic order, batches, resume, ranks


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a fixed function of ``parts`` (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def _generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def epoch_order(n_items: int, seed: int, epoch: int) -> Tensor:
    """The permutation of epoch ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n_items, generator=_generator(seed, "order", epoch))


def batches_per_epoch(n_items: int, batch: int) -> int:
    """Global batches in one epoch (drop_last)."""
    return n_items // batch


def init_batch(dataset: Dataset, n: int, seed: int) -> Batch:
    """The first ``n`` items (all, if fewer) of a seed-derived permutation, stacked: the batch for
    data-dependent initialization (``(x, y)`` for a labelled data set)."""
    perm = torch.randperm(len(dataset), generator=_generator(seed, "init"))
    return _fetch(dataset, perm[:n].tolist())


def _fetch(dataset: Dataset, indices: list[int]) -> Batch:
    getitems = getattr(dataset, "__getitems__", None)
    return _collate(getitems(indices) if getitems else [dataset[i] for i in indices])


def _collate(items: Batch | list) -> Batch:
    """DataLoader collate_fn: a batch fetched by ``__getitems__`` is already stacked (a tensor
    ``x`` or a tuple ``(x, y)``); a list of items is stacked, (x, y) pairs into ``(x, y)``."""
    if isinstance(items, (Tensor, tuple)):
        return items
    return stack(items)


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches of this rank for one epoch, from global batch ``start`` on.

    ``epoch`` and ``start`` are set before each epoch (the DataLoader re-iterates its sampler in
    the main process, so persistent workers see the change).
    """

    def __init__(self, n_items: int, batch: int, seed: int, rank: int, world: int) -> None:
        self.n_items, self.batch, self.seed, self.rank, self.world = n_items, batch, seed, rank, world
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return max(batches_per_epoch(self.n_items, self.batch) - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches(self.epoch, self.start)  # the state now, not at the first next()

    def _batches(self, epoch: int, start: int) -> Iterator[list[int]]:
        perm = epoch_order(self.n_items, self.seed, epoch)
        share = self.batch // self.world
        for t in range(start, batches_per_epoch(self.n_items, self.batch)):
            first = t * self.batch + self.rank * share
            yield perm[first:first + share].tolist()


class BatchStream:
    """The batches of one rank, epoch after epoch, through one DataLoader (so worker processes
    persist across epochs). ``stream.epoch(e, start)`` iterates epoch ``e`` from global batch
    ``start``; each batch is on ``device`` (uint8 images, augmented there; float32 vectors)."""

    def __init__(self, dataset: Dataset, *, batch: int, seed: int, rank: int = 0, world: int = 1,
                 augment: Sequence[str] = (), workers: int = 0, pin_memory: bool = False,
                 device: str | torch.device = "cpu") -> None:
        if world < 1 or not 0 <= rank < world:
            raise DataError(f"rank {rank} is not in a world of {world} processes")
        if batch < 1 or batch % world:
            raise DataError(f"the global batch {batch} must be a positive multiple of the number "
                            f"of processes ({world}); change train.batch or the process count")
        n = len(dataset)
        if batches_per_epoch(n, batch) == 0:
            raise DataError(f"the batch ({batch}) is larger than the data set ({n} items); "
                            f"use a smaller train.batch")
        if workers < 0:
            raise DataError(f"the number of loader workers must be >= 0; got {workers}")
        self.item_shape = tuple(split(_fetch(dataset, [0]))[0].shape[1:])
        self.augment = check_augment(augment, self.item_shape)
        self.batch, self.seed, self.rank, self.world = batch, seed, rank, world
        self.device = torch.device(device)
        self.sampler = EpochBatchSampler(n, batch, seed, rank, world)
        pin = pin_memory and self.device.type == "cuda"
        self.non_blocking = pin
        # DataLoader draws a worker base seed at every iter(); its own generator keeps that
        # draw off the global RNG (nothing random happens in the workers).
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 collate_fn=_collate, pin_memory=pin,
                                 persistent_workers=workers > 0, generator=_generator(seed, "loader"))

    def __len__(self) -> int:
        """Batches per epoch (from the start)."""
        return batches_per_epoch(self.sampler.n_items, self.batch)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Epoch ``epoch`` from global batch ``start`` (the batches before it are not loaded)."""
        if start < 0:
            raise DataError(f"the resume position must be >= 0; got {start}")
        return self._iterate(epoch, start)

    def _iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        share = self.batch // self.world
        self.sampler.epoch, self.sampler.start = epoch, start  # read by iter(loader), just below
        for t, batch in enumerate(self.loader, start):
            x, y = split(batch)
            x = x.to(self.device, non_blocking=self.non_blocking)
            y = None if y is None else y.to(self.device, non_blocking=self.non_blocking)
            if self.augment:
                params = draw_augment(self.batch, self.item_shape, self.augment,
                                      _generator(self.seed, "augment", epoch, t))
                x = apply_augment(x, params.slice(self.rank * share, share))
            yield x if y is None else (x, y)


def make_batches(dataset: Dataset, *, batch: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world: int = 1, augment: Sequence[str] = (), workers: int = 0,
                 pin_memory: bool = False, device: str | torch.device = "cpu") -> Iterator[Batch]:
    """The batches of rank ``rank`` in epoch ``epoch`` from global batch ``start`` (see the module
    docstring). Arguments are checked here, before the first batch (DataError)."""
    stream = BatchStream(dataset, batch=batch, seed=seed, rank=rank, world=world, augment=augment,
                         workers=workers, pin_memory=pin_memory, device=device)
    return stream.epoch(epoch, start)


# ----------------------------------------------------------------------------------------------
# Augmentation (DenseFlow's flip + translate), batched on the device


def check_augment(augment: Sequence[str], item_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The augmentations, validated: known names, images only."""
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise DataError(f"unknown augmentation {', '.join(map(repr, unknown))} in train.augment; "
                        f"known: {', '.join(AUGMENTATIONS)}")
    if augment and len(item_shape) != 3:
        raise DataError(f"train.augment {list(augment)} applies to images only; this data set "
                        f"holds vectors of shape {list(item_shape)}: remove augment")
    return tuple(a for a in AUGMENTATIONS if a in augment)


@dataclass
class AugmentParams:
    """Per-image parameters: horizontal flip, translation (tx, ty) in pixels, edge padding."""

    flip: Tensor  # [N] bool
    tx: Tensor  # [N] int64, positive = right
    ty: Tensor  # [N] int64, positive = down
    pad: int

    def slice(self, first: int, size: int) -> AugmentParams:
        s = slice(first, first + size)
        return AugmentParams(self.flip[s], self.tx[s], self.ty[s], self.pad)


def draw_augment(n: int, item_shape: tuple[int, ...], augment: Sequence[str],
                 generator: torch.Generator) -> AugmentParams:
    """Draw n images' parameters as torchvision does: flip iff U[0,1) < 0.5
    (RandomHorizontalFlip); pad = ceil(0.04 H) (Pad); tx = round(U(-0.04 W', 0.04 W')), ty likewise
    with H', on the padded size W' = W + 2 pad (RandomAffine.get_params, ``img_size`` = [W', H'])."""
    _, height, width = item_shape
    flip = torch.rand(n, generator=generator) < 0.5
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    pad = math.ceil(TRANSLATE * height)
    max_d = torch.tensor([TRANSLATE * (width + 2 * pad), TRANSLATE * (height + 2 * pad)],
                         dtype=torch.float64)
    shift = torch.round(-max_d + 2 * max_d * u).long()  # round half to even, as Python's round()
    if "flip" not in augment:
        flip = torch.zeros_like(flip)
    if "translate" not in augment:
        shift, pad = torch.zeros_like(shift), 0
    return AugmentParams(flip, shift[:, 0], shift[:, 1], pad)


def apply_augment(x: Tensor, p: AugmentParams) -> Tensor:
    """hflip -> Pad(p.pad, edge) -> translate by (tx, ty) with fill 0 -> CenterCrop(H, W) on a
    batch [N, C, H, W] of any dtype, as one gather per axis on x's device.

    Output pixel (i, j) is padded pixel (i + pad - ty, j + pad - tx): 0 outside the padded image,
    else the original pixel at the clamped (edge-padded) position, column mirrored when flipped.
    """
    n, c, h, w = x.shape
    dev = x.device
    pad = p.pad
    rows = torch.arange(h, device=dev) + pad - p.ty.to(dev)[:, None]  # [N, H] padded coordinates
    cols = torch.arange(w, device=dev) + pad - p.tx.to(dev)[:, None]  # [N, W]
    inside = (((rows >= 0) & (rows < h + 2 * pad))[:, :, None]
              & ((cols >= 0) & (cols < w + 2 * pad))[:, None, :])  # [N, H, W]
    rows = (rows - pad).clamp(0, h - 1)
    cols = (cols - pad).clamp(0, w - 1)
    cols = torch.where(p.flip.to(dev)[:, None], w - 1 - cols, cols)
    out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return torch.where(inside[:, None], out, torch.zeros((), dtype=x.dtype, device=dev))

