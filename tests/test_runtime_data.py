"""runtime/data.py: opening data sets (on data the tests write), deterministic batches, resume,
rank slices, and DenseFlow's augmentation against torchvision applied per image."""
from __future__ import annotations

import importlib
import pickle
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from augflow_dsl.runtime import data as D
from augflow_dsl.runtime.data import DataError, DataSource, TensorItems
from augflow_dsl.language.models import DataSpec

TOYS = "augflow_dsl.runtime.toys"


@pytest.fixture
def seed(request) -> int:
    """A seed derived from the test id (stable across runs, unlike hash())."""
    return zlib.crc32(request.node.name.encode())


@pytest.fixture
def toys(monkeypatch):
    """runtime/toys.py; a stand-in with its interface while that module is not on this branch."""
    try:
        return importlib.import_module(TOYS)
    except ModuleNotFoundError:
        fake = types.ModuleType(TOYS)
        fake.TOY_SETS = ("checkerboard", "two_moons", "eight_gaussians", "rings")

        def toy_split(name: str, split: str, seed: int = 0) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
            return torch.rand(1000 if split == "train" else 100, 2, generator=g) * 8 - 4

        fake.toy_split = toy_split
        monkeypatch.setitem(sys.modules, TOYS, fake)
        return fake


def images(n: int, shape=(3, 8, 8), seed: int = 0) -> TensorItems:
    g = torch.Generator().manual_seed(seed)
    return TensorItems(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8))


def spec(shape, bits=8, dataset="cifar10") -> DataSpec:
    return DataSpec(shape=tuple(shape), bits=bits, dataset=dataset)


class Counting(TensorItems):
    """Records every index it is asked to load."""

    def __init__(self, data):
        super().__init__(data)
        self.loaded: list[int] = []

    def __getitems__(self, indices):
        self.loaded += list(indices)
        return super().__getitems__(indices)


# --- order, resume, ranks, workers ------------------------------------------------------------


def test_order_is_a_function_of_seed_and_epoch(seed):
    ds = TensorItems(torch.arange(103).view(103, 1).float())
    run = lambda s, e: torch.cat(list(D.make_batches(ds, batch=10, seed=s, epoch=e)))[:, 0].long()
    a = run(seed, 3)
    assert torch.equal(a, run(seed, 3))
    assert a.shape == (100,) and a.unique().numel() == 100  # drop_last, no repeats
    assert torch.equal(a, D.epoch_order(103, seed, 3)[:100])
    assert not torch.equal(a, run(seed, 4)) and not torch.equal(a, run(seed + 1, 3))
    assert D.batches_per_epoch(103, 10) == 10


def test_global_rng_is_left_alone(seed):
    torch.manual_seed(seed)
    expected = torch.rand(3)
    torch.manual_seed(seed)
    list(D.make_batches(images(40), batch=8, seed=seed, epoch=0, augment=["flip", "translate"]))
    D.init_batch(images(40), 4, seed)
    assert torch.equal(torch.rand(3), expected)


def test_resume_yields_exactly_the_tail_without_loading_the_head(seed):
    full = list(D.make_batches(images(50, seed=seed), batch=6, seed=seed, epoch=2,
                               augment=["flip", "translate"]))
    ds = Counting(images(50, seed=seed).data)
    tail = list(D.make_batches(ds, batch=6, seed=seed, epoch=2, start=5,
                               augment=["flip", "translate"]))
    assert len(full) == 8 and len(tail) == 3
    assert all(torch.equal(a, b) for a, b in zip(full[5:], tail))
    head = set(D.epoch_order(50, seed, 2)[:30].tolist())
    assert len(ds.loaded) == 18 + 1 and not head & set(ds.loaded[1:])  # [0]: the shape probe
    assert list(D.make_batches(ds, batch=6, seed=seed, epoch=2, start=8)) == []


def test_rank_slices_make_up_the_global_batch(seed):
    ds = images(40, seed=seed)
    kw = dict(batch=8, seed=seed, epoch=1, augment=["flip", "translate"])
    whole = list(D.make_batches(ds, **kw))
    r0 = list(D.make_batches(ds, rank=0, world=2, **kw))
    r1 = list(D.make_batches(ds, rank=1, world=2, **kw))
    assert [b.shape[0] for b in r0 + r1] == [4] * 10
    for w, a, b in zip(whole, r0, r1):
        assert torch.equal(torch.cat([a, b]), w)  # same items, same augmentation


def test_workers_give_the_same_batches_across_epochs(seed):
    ds = images(24, seed=seed)
    kw = dict(batch=4, seed=seed, augment=["flip", "translate"])
    stream = D.BatchStream(ds, workers=1, **kw)
    for epoch, start in ((0, 0), (1, 2)):
        expected = list(D.make_batches(ds, epoch=epoch, start=start, **kw))
        got = list(stream.epoch(epoch, start))
        assert len(got) == len(expected) == 6 - start
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert len(stream) == 6


def test_init_batch_is_the_head_of_a_seeded_permutation(seed):
    ds = TensorItems(torch.arange(30).view(30, 1).float())
    a = D.init_batch(ds, 8, seed)
    assert a.shape == (8, 1) and a.unique().numel() == 8
    assert torch.equal(a, D.init_batch(ds, 8, seed))
    assert torch.equal(D.init_batch(ds, 12, seed)[:8], a)
    assert not torch.equal(a, D.init_batch(ds, 8, seed + 1))
    assert D.init_batch(ds, 100, seed).shape == (30, 1)


@pytest.mark.parametrize("kw, words", [
    (dict(batch=6, world=4), ["multiple", "6", "4"]),
    (dict(batch=64), ["larger", "64", "10 items"]),
    (dict(batch=2, rank=2, world=2), ["rank 2"]),
    (dict(batch=2, augment=["rotate"]), ["'rotate'", "flip, translate"]),
    (dict(batch=2, workers=-1), ["workers"]),
    (dict(batch=2, start=-1), ["resume"]),
])
def test_bad_loader_arguments_are_refused_before_loading(kw, words):
    with pytest.raises(DataError) as e:
        D.make_batches(images(10), seed=0, epoch=0, **kw)
    assert all(w in str(e.value) for w in words), str(e.value)


# --- augmentation --------------------------------------------------------------------------------


def torchvision_reference(img: torch.Tensor, flip: bool, tx: int, ty: int, pad: int) -> torch.Tensor:
    """DenseFlow's per-image torchvision pipeline (data.py:65-70) with the given parameters."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    h, w = img.shape[-2:]
    if flip:
        img = F.hflip(img)
    img = F.pad(img, [pad], padding_mode="edge")
    img = F.affine(img, angle=0.0, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0],
                   interpolation=InterpolationMode.NEAREST, fill=0)
    return F.center_crop(img, [h, w])


def test_augmentation_equals_torchvision_per_image(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (24, 3, 9, 7), generator=g, dtype=torch.uint8)
    pad = 2
    flip = torch.rand(24, generator=g) < 0.5
    # translations beyond the padding too, where RandomAffine's fill 0 shows
    tx, ty = torch.randint(-4, 5, (2, 24), generator=g)
    got = D.apply_augment(x, D.AugmentParams(flip, tx, ty, pad))
    for i in range(24):
        ref = torchvision_reference(x[i], bool(flip[i]), int(tx[i]), int(ty[i]), pad)
        assert torch.equal(got[i], ref), (i, bool(flip[i]), int(tx[i]), int(ty[i]))
    assert (got == 0).any()


def test_augmentation_equals_torchvision_on_pil_images(seed):
    """DenseFlow applies the transforms to PIL images; the drawn parameters at 32x32."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    x = images(16, shape=(3, 32, 32), seed=seed).data
    p = D.draw_augment(16, (3, 32, 32), ("flip", "translate"), torch.Generator().manual_seed(seed))
    got = D.apply_augment(x, p)
    for i in range(16):
        img = F.to_pil_image(x[i])
        if p.flip[i]:
            img = F.hflip(img)
        img = F.pad(img, [p.pad], padding_mode="edge")
        img = F.affine(img, angle=0.0, translate=[int(p.tx[i]), int(p.ty[i])], scale=1.0,
                       shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST, fill=0)
        assert torch.equal(got[i], F.pil_to_tensor(F.center_crop(img, [32, 32])))


def test_drawn_parameters_follow_torchvision_ranges(seed):
    p = D.draw_augment(4000, (3, 32, 32), ("flip", "translate"), torch.Generator().manual_seed(seed))
    assert p.pad == 2  # Pad(ceil(0.04 * 32))
    # RandomAffine.get_params on the padded 36x36: round(U(-1.44, 1.44)) -> P(0) = 1/2.88
    for t in (p.tx, p.ty):
        assert set(t.tolist()) == {-1, 0, 1}
        assert abs((t == 0).float().mean().item() - 1 / 2.88) < 0.03
        assert abs((t == 1).float().mean() - (t == -1).float().mean()).item() < 0.04
    assert abs(p.flip.float().mean().item() - 0.5) < 0.03
    p64 = D.draw_augment(4000, (3, 64, 64), ("translate",), torch.Generator().manual_seed(seed))
    assert p64.pad == 3 and set(p64.tx.tolist()) == {-3, -2, -1, 0, 1, 2, 3}  # round(U(-2.8, 2.8))
    assert not p64.flip.any()
    only_flip = D.draw_augment(50, (3, 32, 32), ("flip",), torch.Generator().manual_seed(seed))
    assert only_flip.pad == 0 and not only_flip.tx.any() and only_flip.flip.any()


def test_augmentation_depends_on_seed_epoch_position_only(seed):
    ds = images(32, shape=(3, 32, 32), seed=seed)
    kw = dict(batch=8, seed=seed, augment=["flip", "translate"])
    a = list(D.make_batches(ds, epoch=0, **kw))
    assert all(torch.equal(u, v) for u, v in zip(a, D.make_batches(ds, epoch=0, **kw)))
    plain = list(D.make_batches(ds, epoch=0, batch=8, seed=seed))
    assert any(not torch.equal(u, v) for u, v in zip(a, plain))
    assert all(u.dtype == torch.uint8 and u.shape == (8, 3, 32, 32) for u in a)
    # the same items in another epoch get other parameters
    b = torch.cat(list(D.make_batches(ds, epoch=1, **kw)))
    order0, order1 = D.epoch_order(32, seed, 0), D.epoch_order(32, seed, 1)
    a = torch.cat(a)
    assert not torch.equal(a[order0.argsort()], b[order1.argsort()])


def test_vector_data_refuses_augmentation():
    vectors = TensorItems(torch.randn(20, 2))
    with pytest.raises(DataError, match="images only"):
        D.make_batches(vectors, batch=4, seed=0, epoch=0, augment=["flip"])
    batch = next(D.make_batches(vectors, batch=4, seed=0, epoch=0))
    assert batch.dtype == torch.float32 and batch.shape == (4, 2)


# --- data sets -----------------------------------------------------------------------------------


def test_digits_shape_bits_and_split(seed):
    src = D.open_dataset(spec([1, 8, 8], bits=5, dataset="digits"), seed=seed)
    assert isinstance(src, DataSource) and src.shape == (1, 8, 8) and src.bits == 5
    train, test = src.train.data, src.test.data
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8)
    assert train.dtype == torch.uint8 and int(train.max()) == 16 and int(train.min()) == 0
    again = D.open_dataset(spec([1, 8, 8], bits=5, dataset="digits"), seed=seed)
    assert torch.equal(again.train.data, train)
    other = D.open_dataset(spec([1, 8, 8], bits=5, dataset="digits"), seed=seed + 1)
    assert not torch.equal(other.train.data, train)
    from sklearn.datasets import load_digits
    every = torch.from_numpy(load_digits().images).to(torch.uint8).flatten(1)
    both = torch.cat([train, test]).flatten(1)
    assert torch.equal(torch.sort(both, 0).values, torch.sort(every, 0).values)  # a partition
    with pytest.raises(DataError, match="up to 16.*bits: 4.*at least 5"):
        D.open_dataset(spec([1, 8, 8], bits=4, dataset="digits"))
    with pytest.raises(DataError, match="no bits"):
        D.open_dataset(spec([1, 8, 8], bits=None, dataset="digits"))


def write_fake_cifar10(root: Path, n: int, monkeypatch) -> list[np.ndarray]:
    """The torchvision on-disk format: pickled dicts of 3,072-byte rows (md5 checks patched)."""
    import torchvision.datasets.cifar as cifar

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    written = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        written.append(rows)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": [i % 10 for i in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    return written


def test_cifar10_from_a_torchvision_folder(tmp_path, monkeypatch):
    rows = write_fake_cifar10(tmp_path, 3, monkeypatch)
    src = D.open_dataset(spec([3, 32, 32]), root=tmp_path)
    assert src.train.data.shape == (15, 3, 32, 32) and src.test.data.shape == (3, 3, 32, 32)
    assert src.train.data.dtype == torch.uint8 and src.train.data.is_contiguous()
    assert torch.equal(src.train.data[0], torch.from_numpy(rows[0][0]).view(3, 32, 32))  # CHW
    assert torch.equal(src.test.data[2], torch.from_numpy(rows[5][2]).view(3, 32, 32))
    with pytest.raises(DataError) as e:
        D.open_dataset(spec([3, 16, 16]), root=tmp_path)
    assert "[3, 32, 32]" in str(e.value) and "[3, 16, 16]" in str(e.value)
    with pytest.raises(DataError, match="bits: 7"):
        D.open_dataset(spec([3, 32, 32], bits=7), root=tmp_path)
    labelled = D.open_dataset(DataSpec(shape=(3, 32, 32), bits=8, dataset="cifar10", labels=True), root=tmp_path)
    assert labelled.classes == 10 and labelled.train.labels.tolist() == [0, 1, 2] * 5
    assert torch.equal(labelled.train.data, src.train.data)


class PairList(torch.utils.data.Dataset):
    """(x, y) items one at a time (no ``__getitems__``): the DataLoader's list-of-items path."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_labelled_batches_are_pairs_whatever_the_workers_and_ranks(seed):
    x = torch.randint(0, 256, (24, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    y = torch.arange(24) % 5
    kw = dict(batch=6, seed=seed, augment=["flip", "translate"])
    plain = list(D.BatchStream(TensorItems(x), **kw).epoch(1))
    for ds, workers in ((TensorItems(x, y), 0), (TensorItems(x, y), 1), (PairList(x, y), 0)):
        pairs = list(D.BatchStream(ds, workers=workers, **kw).epoch(1))
        assert len(pairs) == len(plain) == 4
        order = D.epoch_order(24, seed, 1)
        for t, ((xb, yb), xp) in enumerate(zip(pairs, plain)):
            assert torch.equal(xb, xp)  # the images (augmented) are those of the unlabelled stream
            assert torch.equal(yb, y[order[6 * t:6 * t + 6]])  # each with its own label
    halves = [list(D.BatchStream(TensorItems(x, y), rank=r, world=2, **kw).epoch(1)) for r in range(2)]
    for t, (xb, yb) in enumerate(list(D.BatchStream(TensorItems(x, y), **kw).epoch(1))):
        assert torch.equal(torch.cat([h[t][1] for h in halves]), yb)
        assert torch.equal(torch.cat([h[t][0] for h in halves]), xb)


@pytest.mark.parametrize("name, looked", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                          ("svhn", "")])
def test_missing_download_set_names_the_place_and_download(tmp_path, name, looked):
    shape = [1, 28, 28] if name == "mnist" else [3, 32, 32]
    with pytest.raises(DataError) as e:
        D.open_dataset(spec(shape, dataset=name), root=tmp_path / "data")
    msg = str(e.value)
    assert str(tmp_path / "data" / looked).rstrip("/") in msg and "--download" in msg, msg


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, uint8 code 8, ndim), big-endian sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.tobytes())


def test_mnist_is_one_channel_and_refuses_a_colour_spec(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 2)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(n, dtype=np.uint8))
    src = D.open_dataset(spec([1, 28, 28], dataset="mnist"), root=tmp_path)
    assert src.train.data.shape == (5, 1, 28, 28) and src.test.data.shape == (2, 1, 28, 28)
    with pytest.raises(DataError) as e:
        D.open_dataset(spec([3, 32, 32], dataset="mnist"), root=tmp_path)
    assert "[1, 28, 28]" in str(e.value) and "[3, 32, 32]" in str(e.value)


def test_imagenet32_from_npz_batches(tmp_path):
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {f: rng.integers(0, 256, (2, 3072), dtype=np.uint8)
               for f in D.IMAGENET_TRAIN_FILES + (D.IMAGENET_VAL_FILE,)}
    for f, rows in batches.items():
        np.savez(folder / f, data=rows, labels=np.ones(2, dtype=np.int64))
    src = D.open_dataset(spec([3, 32, 32], dataset="imagenet32"), root=tmp_path)
    assert src.train.data.shape == (20, 3, 32, 32) and src.test.data.shape == (2, 3, 32, 32)
    row = batches["train_data_batch_2.npz"][1]
    assert torch.equal(src.train.data[3], torch.from_numpy(row).view(3, 32, 32))
    assert int(src.train.data[3, 1, 0, 0]) == row[1024]  # CHW rows: green starts at 1,024
    np.savez(folder / "val_data.npz", data=rng.integers(0, 256, (2, 100), dtype=np.uint8))
    with pytest.raises(DataError, match="val_data.npz.*3072"):
        D.open_dataset(spec([3, 32, 32], dataset="imagenet32"), root=tmp_path)
    (folder / "train_data_batch_7.npz").unlink()
    with pytest.raises(DataError) as e:
        D.open_dataset(spec([3, 32, 32], dataset="imagenet32"), root=tmp_path)
    msg = str(e.value)
    assert str(folder) in msg and "train_data_batch_7.npz" in msg and "never downloaded" in msg


def test_unknown_or_missing_dataset_lists_the_known_ones(toys):
    for name in ("cifar100", None):
        with pytest.raises(DataError) as e:
            D.open_dataset(spec([3, 32, 32], dataset=name))
        assert all(k in str(e.value) for k in ("cifar10", "imagenet64", "digits", "two_moons"))


def test_toy_sets_are_float_vectors_from_toys(toys, seed):
    src = D.open_dataset(spec([2], bits=None, dataset="checkerboard"), seed=seed)
    assert torch.equal(src.train.data, toys.toy_split("checkerboard", "train", seed))
    assert torch.equal(src.test.data, toys.toy_split("checkerboard", "test", seed))
    assert src.train.data.dtype == torch.float32 and src.shape == (2,) and src.bits is None
    with pytest.raises(DataError, match="continuous.*bits: 8"):
        D.open_dataset(spec([2], bits=8, dataset="checkerboard"))
    with pytest.raises(DataError, match=r"\[2\].*\[3\]"):
        D.open_dataset(spec([3], bits=None, dataset="rings"))


def test_the_shipped_specs_open_their_embedded_data(toys):
    import augflow_dsl as af

    root = Path(__file__).resolve().parents[1] / "specs"
    for name, shape in (("digits-small", (1, 8, 8)), ("toy-glow3", (2,))):
        src = D.open_dataset(af.load(root / f"{name}.flow").data)
        assert src.shape == shape and tuple(src.train[0].shape) == shape


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUGFLOW_DATA", str(tmp_path))
    assert D.default_data_root() == tmp_path
    monkeypatch.delenv("AUGFLOW_DATA")
    assert D.default_data_root() == Path.home() / ".cache/augflow-dsl/data"
