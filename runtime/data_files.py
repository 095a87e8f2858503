"""The user's own data: an image folder (``dataset: folder``) or a NumPy file (``dataset: npz``).

An image folder is read with Pillow, as torchvision's ``ImageFolder`` reads it (its ``pil_loader``;
the decoders of ``torchvision.io`` are deprecated since torchvision 0.29), each image converted to the
spec's channels (1: gray "L", 3: "RGB", 2: "LA", 4: "RGBA"), the files those of ``ImageFolder``'s
``IMG_EXTENSIONS``.
A subfolder per class gives labels, in the sorted order of the subfolder names (``ImageFolder``'s
``find_classes``); images directly in the folder have none. ``train/`` and ``test/`` subfolders give
the split. An .npz holds ``x`` (uint8 [N, H, W, C] or [N, C, H, W], told apart by the spec's shape;
[N, H, W] for one channel; float [N, D] for vector data), optional int labels ``y`` and an optional
``x_test`` / ``y_test`` split. Without a split, :data:`~augflow_dsl.language.datasets.HOLDOUT`
(10%) of the items, drawn by seed, are the test set.

Everything is checked before a run starts and refused with a :class:`DataError` that names the
file: unreadable or 16-bit images, mixed sizes, an empty folder, images beside class subfolders,
labels that are not whole numbers >= 0 or do not match the items.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from augflow_dsl.language.datasets import HOLDOUT

# torchvision.datasets.folder.IMG_EXTENSIONS (importing torchvision.datasets costs a second)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class DataError(Exception):
    """A user's mistake about data: the message says what is wrong and how to fix it."""


@dataclass
class OwnData:
    """Train / test items (uint8 [N, C, H, W] or float32 [N, D]) and labels (int64 [N], or None
    when the data have none), ``classes`` the number of classes (None without labels)."""

    train: Tensor
    test: Tensor
    y_train: Tensor | None
    y_test: Tensor | None
    classes: int | None


def check_labels(y: Tensor, classes: int, where: str = "the data") -> None:
    """Refuse labels outside 0 .. classes - 1 (the spec's ``condition: {classes: K}``)."""
    if y.is_floating_point():
        raise DataError(f"{where} holds context vectors {list(y.shape[1:])} as y, but the spec's condition: "
                        f"says classes: {classes}; give whole-number labels, or condition: {{vector: D}}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"{where} has labels {int(y.min())}..{int(y.max())}, outside 0..{classes - 1} of the "
                        f"spec's condition: {{classes: {classes}}}; set classes to at least {int(y.max()) + 1}")


def check_vectors(y: Tensor, dim: int, where: str = "the data") -> None:
    """Refuse a y that is not float context vectors [N, dim] (the spec's ``condition: {vector: D}``)."""
    if not y.is_floating_point() or y.dim() != 2 or y.shape[1] != dim:
        got = "class labels" if not y.is_floating_point() else f"vectors of {list(y.shape[1:])}"
        raise DataError(f"{where} gives {got} as y, but the spec's condition: says vector: {dim}; save y as "
                        f"float [N, {dim}] in an .npz")


def holdout(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(train, test) indices: a random ``HOLDOUT`` of ``n`` (at least one item) is the test set."""
    if n < 2:
        raise DataError(f"the data hold {n} item(s); a train / test split needs at least 2")
    k = max(1, round(HOLDOUT * n))
    perm = torch.randperm(n, generator=generator)
    return perm[k:].sort().values, perm[:k].sort().values


def open_own(kind: str, path: str | None, shape: tuple[int, ...], generator: torch.Generator) -> OwnData:
    """Read ``path`` as ``kind`` ("folder" or "npz") for a spec of item ``shape``; the split of
    data without one is drawn from ``generator``."""
    if path is None:
        raise DataError(f"dataset: {kind} needs a path: add `path: \"...\"` to the spec's data: or pass --data PATH")
    p = Path(path)
    if kind == "folder":
        if not p.is_dir():
            raise DataError(f"no such image folder: {p}")
        return _folder(p, shape, generator)
    if not p.is_file():
        raise DataError(f"no such .npz file: {p}")
    return _npz(p, shape, generator)


# ------------------------------------------------------------------------------------- folder
def _images_and_classes(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files under ``root``, with their class index when ``root`` holds class subfolders."""
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    dirs = [e.name for e in entries if e.is_dir()]
    files = [Path(e.path) for e in entries if e.is_file() and _is_image(Path(e.path))]
    if dirs and files:
        raise DataError(f"{root} holds both images ({files[0].name}, ...) and subfolders ({dirs[0]}/, ...): put "
                        f"every image in a class subfolder (labelled data), or none in subfolders (unlabelled)")
    if not dirs:
        return files, None, None
    images, labels = [], []
    for k, name in enumerate(dirs):
        for folder, subdirs, names in os.walk(root / name):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found = [Path(folder) / f for f in sorted(names) if not f.startswith(".") and _is_image(Path(folder) / f)]
            images += found
            labels += [k] * len(found)
    return images, labels, dirs


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _decode(path: Path, channels: int) -> Tensor:
    """One image as uint8 [C, H, W] with the spec's ``channels``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode.startswith(("I", "F")):  # "I;16", "I", "F": 16-bit or wider levels
                raise DataError(f"{path} is a {im.mode} image (16-bit or wider levels); the loader reads 8-bit "
                                f"images: save it with 8 bits per channel")
            a = np.asarray(im.convert(MODES[channels]))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read the image {path}: {e}") from None
    return torch.from_numpy(a.reshape(*a.shape[:2], -1).transpose(2, 0, 1).copy())


def _read_images(root: Path, shape: tuple[int, ...]) -> tuple[Tensor, list[int] | None, list[str] | None]:
    if len(shape) != 3:
        raise DataError(f"{root} is an image folder but the spec's data: says shape {list(shape)} (vectors); "
                        f"give shape: [C, H, W], or use an .npz with x [N, D] for vector data")
    if shape[0] not in MODES:
        raise DataError(f"{root}: an image folder gives 1 (gray), 2, 3 (RGB) or 4 (RGBA) channels; the spec's "
                        f"data: says shape {list(shape)}")
    files, labels, classes = _images_and_classes(root)
    if not files:
        raise DataError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)}"
                        + (f" in its subfolders {', '.join(classes)}" if classes else "") + ")")
    first = _decode(files[0], shape[0])
    out = torch.empty((len(files), *first.shape), dtype=torch.uint8)
    for i, f in enumerate(files):
        img = first if i == 0 else _decode(f, shape[0])
        if img.shape != first.shape:
            raise DataError(f"images of mixed sizes in {root}: {files[0].relative_to(root)} is "
                            f"{_size(first)} but {f.relative_to(root)} is {_size(img)}; resize them to one size")
        out[i] = img
    return out, labels, classes


def _size(img: Tensor) -> str:
    c, h, w = img.shape
    return f"{w}x{h} with {c} channel{'s' if c > 1 else ''}"


def _folder(root: Path, shape: tuple[int, ...], generator: torch.Generator) -> OwnData:
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        x, y, classes = _read_images(train_dir, shape)
        xt, yt, classes_t = _read_images(test_dir, shape)
        if (classes is None) != (classes_t is None):
            raise DataError(f"{train_dir} and {test_dir} must both hold class subfolders, or neither")
        if classes is not None:
            extra = sorted(set(classes_t) - set(classes))
            if extra:
                raise DataError(f"{test_dir} has classes that {train_dir} lacks: {', '.join(extra)}")
            yt = [classes.index(classes_t[k]) for k in yt]
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"the images of {train_dir} are {_size(x[0])} but those of {test_dir} are {_size(xt[0])}")
        return OwnData(x, xt, _long(y), _long(yt), len(classes) if classes else None)
    x, y, classes = _read_images(root, shape)
    tr, te = holdout(x.shape[0], generator)
    yy = _long(y)
    return OwnData(x[tr].contiguous(), x[te].contiguous(), None if yy is None else yy[tr],
                   None if yy is None else yy[te], len(classes) if classes else None)


def _long(y) -> Tensor | None:
    return None if y is None else torch.as_tensor(y, dtype=torch.long)


# ---------------------------------------------------------------------------------------- npz
def _npz(path: Path, shape: tuple[int, ...], generator: torch.Generator) -> OwnData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path} as an .npz file: {e}") from None
    if "x" not in arrays:
        raise DataError(f"{path} has no array 'x' (it has: {', '.join(arrays) or 'none'}); save the items as "
                        f"x (uint8 [N, H, W, C] or [N, C, H, W]), labels as y")
    x = _items(path, "x", arrays["x"], shape)
    y = _labels(path, "y", arrays.get("y"), x.shape[0])
    if "x_test" in arrays:
        xt = _items(path, "x_test", arrays["x_test"], shape)
        yt = _labels(path, "y_test", arrays.get("y_test"), xt.shape[0])
        if (y is None) != (yt is None):
            raise DataError(f"{path}: give labels for both splits (y and y_test), or for neither")
    else:
        tr, te = holdout(x.shape[0], generator)
        x, xt = x[tr].contiguous(), x[te].contiguous()
        y, yt = (None, None) if y is None else (y[tr], y[te])
    classes = None if y is None or y.is_floating_point() else int(torch.cat([y, yt]).max()) + 1
    return OwnData(x, xt, y, yt, classes)


def _items(path: Path, key: str, a: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    where = f"{path}: '{key}'"
    if a.ndim < 2 or a.shape[0] == 0:
        raise DataError(f"{where} must hold N >= 1 items; it has shape {list(a.shape)}")
    if len(shape) == 1:
        if a.ndim != 2 or a.shape[1] != shape[0]:
            raise DataError(f"{where} has shape {list(a.shape)}; the spec's data: shape {list(shape)} needs "
                            f"[N, {shape[0]}]")
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"{where} holds {a.dtype} vectors; vector data are continuous: save them as float")
        if not np.isfinite(a).all():
            raise DataError(f"{where} holds NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    c, h, w = shape
    if a.ndim == 3 and c == 1:
        a = a[:, None]
    if a.ndim != 4 or tuple(a.shape[1:]) not in ((c, h, w), (h, w, c)):
        raise DataError(f"{where} has shape {list(a.shape)}; the spec's data: shape {list(shape)} needs "
                        f"[N, {c}, {h}, {w}] or [N, {h}, {w}, {c}]")
    if tuple(a.shape[1:]) != (c, h, w):
        a = a.transpose(0, 3, 1, 2)
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{where} holds {a.dtype} values; images are integer levels: save them as uint8")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{where} holds values {lo}..{hi}; the loader reads 8-bit levels 0..255")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))


def _labels(path: Path, key: str, y: np.ndarray | None, n: int) -> Tensor | None:
    if y is None:
        return None
    where = f"{path}: '{key}'"
    if y.shape[:1] != (n,) or y.ndim > 2:
        raise DataError(f"{where} has shape {list(y.shape)}; it needs one label per item: [{n}] (or [{n}, D] "
                        f"context vectors)")
    if y.ndim == 2 and y.shape[0] == n and np.issubdtype(y.dtype, np.floating):  # context vectors [N, D]
        if not np.isfinite(y).all():
            raise DataError(f"{where} holds NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where} holds {y.dtype} values; labels are whole numbers 0..K-1 "
                        f"(or float context vectors [N, D])")
    if n and int(y.min()) < 0:
        raise DataError(f"{where} holds the label {int(y.min())}; labels are whole numbers 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


__all__ = ["DataError", "IMAGE_SUFFIXES", "OwnData", "check_labels", "check_vectors", "holdout", "open_own"]
