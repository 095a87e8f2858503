"""The user's own data (issue 23 part 3): ``dataset: folder`` / ``npz``, ``--data PATH``, labels,
the refusals of bad data, ``check`` on data it can judge without reading any, and no run folder
left behind by a refused run. Tiny images written to tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import augflow_dsl as af
from augflow_dsl.graph.pipeline import analyze
from augflow_dsl.language.datasets import DATASETS, HOLDOUT, known_datasets, with_data
from augflow_dsl.language.models import DataSpec
from augflow_dsl.runtime import data as D
from augflow_dsl.runtime.batches import split
from augflow_dsl.runtime.data import DataError, open_dataset
from augflow_dsl.runtime.data_files import check_labels

SPEC = """flow: tiny
data: {{shape: {shape}, bits: {bits}{extra}}}
stages:
  - squeeze
  - [actnorm, conv1x1, affine_coupling(net: glow_net(filters: 4)), swap]
prior: normal
train: {{batch: 4, init_batch: 4}}
"""


def write_spec(tmp_path: Path, shape="[1, 8, 8]", bits=5, extra="", name="tiny.flow") -> Path:
    p = tmp_path / name
    p.write_text(SPEC.format(shape=shape, bits=bits, extra=extra))
    return p


def png(path: Path, h=8, w=8, c=1, top=31, seed=0) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, top + 1, (h, w, c), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a[..., 0] if c == 1 else a).save(path)
    return a


def folder(root: Path, classes=("cat", "dog"), n=5, **kw) -> Path:
    for k, name in enumerate(classes):
        for i in range(n):
            png(root / name / f"{i}.png", seed=10 * k + i, **kw)
    return root


def data(shape=(1, 8, 8), bits=5, dataset="folder", path=None, labels=False) -> DataSpec:
    return DataSpec(shape=shape, bits=bits, dataset=dataset, path=str(path) if path else None, labels=labels)


# --- reading -------------------------------------------------------------------------------------------


def test_folder_with_class_subfolders_gives_labels_and_a_seeded_split(tmp_path):
    root = folder(tmp_path / "imgs", n=10)
    src = open_dataset(data(path=root, labels=True), seed=3)
    assert src.labels and src.classes == 2
    assert len(src.test) == round(HOLDOUT * 20) and len(src.train) == 20 - len(src.test)
    x, y = split(D._fetch(src.train, list(range(len(src.train)))))
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.long
    assert set(y.tolist()) <= {0, 1}
    # the label is the subfolder's index: each item is one of its class's files
    files = {k: [np.asarray(Image.open(f)) for f in sorted((root / c).glob("*.png"))] for k, c in enumerate(("cat", "dog"))}
    for xi, yi in zip(x, y):
        assert any(np.array_equal(xi[0].numpy(), a) for a in files[int(yi)])
    again = open_dataset(data(path=root, labels=True), seed=3)
    assert torch.equal(again.test.data, src.test.data)  # a function of the seed
    assert not torch.equal(open_dataset(data(path=root), seed=4).test.data, src.test.data)
    plain = open_dataset(data(path=root), seed=3)  # labels: false -> single tensors, the same split
    assert not plain.labels and torch.equal(plain.train[0], src.train[0][0])


def test_flat_folder_and_train_test_subfolders(tmp_path):
    for i in range(6):
        png(tmp_path / "flat" / f"{i}.png", c=3, seed=i)
    src = open_dataset(data(shape=(3, 8, 8), bits=8, path=tmp_path / "flat"))
    assert len(src.train) + len(src.test) == 6 and src.train.labels is None
    with pytest.raises(DataError, match="no labels.*subfolder"):
        open_dataset(data(shape=(3, 8, 8), bits=8, path=tmp_path / "flat", labels=True))
    folder(tmp_path / "split" / "train", n=3)
    folder(tmp_path / "split" / "test", classes=("dog",), n=2)
    src = open_dataset(data(path=tmp_path / "split", labels=True))
    assert (len(src.train), len(src.test)) == (6, 2)  # the folder's own split
    assert src.test.labels.tolist() == [1, 1]  # "dog" is class 1 of train's classes


def test_npz_in_both_layouts_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (12, 3, 4, 5), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nchw.transpose(0, 2, 3, 1), y=np.arange(12) % 3,
             x_test=nchw[:2].transpose(0, 2, 3, 1), y_test=np.array([2, 0]))
    np.savez(tmp_path / "nchw.npz", x=nchw)
    a = open_dataset(data(shape=(3, 4, 5), bits=8, dataset="npz", path=tmp_path / "nhwc.npz", labels=True))
    assert torch.equal(a.train.data, torch.from_numpy(nchw)) and a.train.labels.tolist() == [0, 1, 2] * 4
    assert a.test.labels.tolist() == [2, 0] and a.classes == 3
    b = open_dataset(data(shape=(3, 4, 5), bits=8, dataset="npz", path=tmp_path / "nchw.npz"))
    assert len(b.train) + len(b.test) == 12 and len(b.test) == 1
    assert sorted(torch.cat([b.train.data, b.test.data]).flatten().tolist()) == sorted(nchw.flatten().tolist())
    with pytest.raises(DataError, match="no labels.*save them as y"):
        open_dataset(data(shape=(3, 4, 5), bits=8, dataset="npz", path=tmp_path / "nchw.npz", labels=True))
    with pytest.raises(DataError, match=r"needs \[N, 3, 5, 4\] or \[N, 5, 4, 3\]"):
        open_dataset(data(shape=(3, 5, 4), bits=8, dataset="npz", path=tmp_path / "nchw.npz"))


def test_labelled_batches_are_pairs_and_the_images_are_the_unlabelled_ones(tmp_path):
    root = folder(tmp_path / "imgs", n=8)
    plain, lab = (open_dataset(data(path=root, labels=k), seed=1) for k in (False, True))
    xs = list(D.make_batches(plain.train, batch=4, seed=5, epoch=0, augment=["flip"]))
    pairs = list(D.make_batches(lab.train, batch=4, seed=5, epoch=0, augment=["flip"]))
    assert len(xs) == len(pairs) > 0
    for x, (x2, y) in zip(xs, pairs):
        assert torch.equal(x, x2) and y.shape == (4,) and y.dtype == torch.long
    x0, y0 = split(D.init_batch(lab.train, 3, seed=0))
    assert torch.equal(x0, D.init_batch(plain.train, 3, seed=0)) and y0.shape == (3,)


def test_labelled_builtin_sets_and_labels_refused_where_there_are_none():
    toys = pytest.importorskip("augflow_dsl.runtime.toys")
    for name in toys.TOY_SETS:  # the same points as unlabelled, each with its mixture component
        x, y = toys.toy_split(name, "test", 0, labels=True)
        assert torch.equal(x, toys.toy_split(name, "test", 0))
        assert y.unique().tolist() == list(range(toys.TOY_CLASSES[name]))
    x, y = toys.toy_split("rings", "test", 0, labels=True)
    radius = [float(x[y == k].norm(dim=1).mean()) for k in range(4)]
    assert radius == sorted(radius)  # ring 0 is the innermost
    digits = open_dataset(DataSpec(shape=(1, 8, 8), bits=5, dataset="digits", labels=True), seed=0)
    assert digits.classes == 10 and digits.train.labels.shape == (1500,)
    with pytest.raises(DataError, match="imagenet32 has no labels"):
        open_dataset(DataSpec(shape=(3, 32, 32), bits=8, dataset="imagenet32", labels=True))
    assert torch.equal(split(digits.test[0])[0], open_dataset(DataSpec(shape=(1, 8, 8), bits=5, dataset="digits"),
                                                               seed=0).test[0])
    with pytest.raises(DataError, match=r"labels 0\.\.9, outside 0\.\.4"):
        open_dataset(DataSpec(shape=(1, 8, 8), bits=5, dataset="digits", labels=True), classes=5)


# --- bad data --------------------------------------------------------------------------------------------


def test_bad_folders_are_refused_with_the_file_named(tmp_path):
    bad = folder(tmp_path / "unreadable", n=2)
    (bad / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read the image .*broken\.png"):
        open_dataset(data(path=bad))
    mixed = folder(tmp_path / "mixed", n=2)
    png(mixed / "dog" / "big.png", h=9)
    with pytest.raises(DataError, match=r"mixed sizes.*big\.png is 8x9"):
        open_dataset(data(path=mixed))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images in"):
        open_dataset(data(path=tmp_path / "empty"))
    bright = folder(tmp_path / "bright", n=2, top=200)
    with pytest.raises(DataError, match=r"values up to \d+, which do not fit in the spec's bits: 5"):
        open_dataset(data(path=bright))
    both = folder(tmp_path / "both", n=2)
    png(both / "loose.png")
    with pytest.raises(DataError, match="both images .* and subfolders"):
        open_dataset(data(path=both))
    deep = tmp_path / "deep"
    arr = np.zeros((8, 8), dtype=np.uint16)
    deep.mkdir()
    for i in range(2):
        Image.fromarray(arr).save(deep / f"{i}.png")
    with pytest.raises(DataError, match="I;16 image .*16-bit"):
        open_dataset(data(path=deep))
    with pytest.raises(DataError, match="shape \\[1, 8, 8\\].*shape \\[1, 4, 4\\]"):
        open_dataset(data(shape=(1, 4, 4), path=folder(tmp_path / "ok", n=2)))


def test_bad_npz_is_refused(tmp_path):
    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return data(shape=(1, 4, 4), bits=8, dataset="npz", path=tmp_path / name, labels="y" in arrays)

    with pytest.raises(DataError, match="no array 'x'"):
        open_dataset(npz("a.npz", images=np.zeros((3, 4, 4), np.uint8)))
    with pytest.raises(DataError, match="float32 values; images are integer levels"):
        open_dataset(npz("b.npz", x=np.zeros((3, 4, 4), np.float32)))
    with pytest.raises(DataError, match=r"values 300\.\.300; the loader reads 8-bit levels"):
        open_dataset(npz("c.npz", x=np.full((3, 4, 4), 300, np.int64)))
    with pytest.raises(DataError, match="one label per item"):
        open_dataset(npz("d.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, np.int64)))
    with pytest.raises(DataError, match="label -1"):
        open_dataset(npz("e.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, -1])))
    (tmp_path / "f.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read .* as an .npz"):
        open_dataset(data(shape=(1, 4, 4), bits=8, dataset="npz", path=tmp_path / "f.npz"))
    with pytest.raises(DataError, match=r"outside 0\.\.2 of the spec's condition: \{classes: 3\}"):
        check_labels(torch.tensor([0, 3]), 3)


# --- check (no data read) ---------------------------------------------------------------------------------


def errors(tmp_path, **kw) -> list[str]:
    return [e["text"] for e in analyze(write_spec(tmp_path, **kw)).report.errors]


def test_check_refuses_an_unknown_data_set_at_its_position(tmp_path):
    (text,) = errors(tmp_path, extra=", dataset: digitz")
    assert text.startswith(f"{tmp_path / 'tiny.flow'}:2:44: error: data: unknown dataset 'digitz' (did you mean 'digits'?)")
    assert "known datasets: " + ", ".join(known_datasets()) in text


def test_check_refuses_a_shape_or_bits_that_cannot_hold_the_set(tmp_path):
    (bits,) = errors(tmp_path, bits=4, extra=", dataset: digits")
    assert ":2:32: error: data: dataset digits has values up to 16" in bits and "at least 5" in bits
    (shape,) = errors(tmp_path, shape="[3, 16, 16]", bits=8, extra=", dataset: digits")
    assert ":2:15: error: data: dataset digits holds images of shape [1, 8, 8]" in shape
    assert errors(tmp_path, extra=", dataset: digits") == []
    assert any("no labels" in e for e in errors(tmp_path, shape="[3, 32, 32]", bits=8,
                                                 extra=", dataset: imagenet32, labels: true"))
    assert any("is continuous" in e for e in errors(tmp_path, shape="[2]", bits=8, extra=", dataset: rings"))
    # a named set at another image size: check and compile go on (tests compile small CIFAR models)
    a = analyze(write_spec(tmp_path, shape="[3, 8, 8]", bits=8, extra=", dataset: cifar10"))
    assert a.valid and any("train will refuse it" in w["text"] for w in a.report.warnings)


def test_the_facts_agree_with_the_runtime():
    toys = pytest.importorskip("augflow_dsl.runtime.toys")
    assert set(toys.TOY_SETS) == {n for n, f in DATASETS.items() if f.source == "toy"}
    assert {n: DATASETS[n].classes for n in toys.TOY_SETS} == toys.TOY_CLASSES
    assert D.known_datasets() == known_datasets()


def test_a_spec_path_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    folder(tmp_path / "imgs", n=2)
    spec = af.load(write_spec(tmp_path, extra=', dataset: folder, path: "imgs"'))
    monkeypatch.chdir("/")
    assert with_data(spec).data.path == str((tmp_path / "imgs").resolve())
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((4, 8, 8), np.uint8))
    assert with_data(spec, npz).data.dataset == "npz"


# --- train --data, and no folder left behind ------------------------------------------------------------


@pytest.fixture
def train(capsys):
    from augflow_dsl.cli import main

    def run(*args: str) -> tuple[int, str]:
        code = main(["train", *args])
        return code, capsys.readouterr().err
    return run


def test_train_and_eval_with_data_on_a_tiny_folder(tmp_path, train, capsys):
    root = folder(tmp_path / "imgs", n=5)
    run = tmp_path / "run"
    code, err = train(str(write_spec(tmp_path)), "--data", str(root), "--steps", "2", "--run", str(run),
                      "--eval-images", "2", "--no-tensorboard")
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["data"] == str(root.resolve())
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2
    from augflow_dsl.cli import main

    assert main(["eval", str(run), "--json"]) == 0  # the run's own data, from its config.json
    assert json.loads(capsys.readouterr().out)["n"] == 1  # 10% of the 10 images
    np.savez(tmp_path / "more.npz", x=np.zeros((7, 8, 8, 1), np.uint8), x_test=np.ones((3, 8, 8, 1), np.uint8))
    assert main(["eval", str(run), "--data", str(tmp_path / "more.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    assert main(["eval", str(run), "--data", str(tmp_path / "missing")]) == 1
    assert "no such folder or file" in capsys.readouterr().err


def test_a_refused_run_leaves_no_folder(tmp_path, train):
    (tmp_path / "empty").mkdir()
    run = tmp_path / "runs" / "tiny" / "r"
    code, err = train(str(write_spec(tmp_path)), "--data", str(tmp_path / "empty"), "--steps", "1", "--run", str(run))
    assert code == 1 and "no images in" in err
    assert not (tmp_path / "runs").exists()
    code, err = train(str(write_spec(tmp_path, extra=", dataset: digits", bits=4)), "--steps", "1", "--run", str(run))
    assert code == 1 and "do not fit in bits: 4" in err and not (tmp_path / "runs").exists()


def test_check_holds_the_condition_to_the_data_set(tmp_path):
    def errs(data: str, condition: str) -> list[str]:
        p = tmp_path / "cond.flow"
        p.write_text(SPEC.format(shape="[1, 8, 8]", bits=5, extra=data) + f"condition: {condition}\n")
        return [e["text"] for e in analyze(p).report.errors]

    assert errs(", dataset: digits, labels: true", "{classes: 10}") == []
    assert any("has 10 classes (labels 0..9) but condition: says classes: 5" in e
               for e in errs(", dataset: digits, labels: true", "{classes: 5}"))
    assert any("gives class labels, but condition: says vector: 3" in e
               for e in errs(", dataset: digits, labels: true", "{vector: 3}"))
    assert any("add `labels: true`" in e for e in errs(", dataset: digits", "{classes: 10}"))


def test_npz_context_vectors_for_a_vector_condition(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "v.npz", x=rng.integers(0, 32, (10, 8, 8), dtype=np.uint8),
             y=rng.normal(size=(10, 3)).astype(np.float32))
    d = data(dataset="npz", path=tmp_path / "v.npz", labels=True)
    src = open_dataset(d, vector=3)
    assert src.train.labels.dtype == torch.float32 and src.train.labels.shape == (9, 3) and src.classes is None
    with pytest.raises(DataError, match=r"vectors of \[3\] as y, but .* vector: 4"):
        open_dataset(d, vector=4)
    with pytest.raises(DataError, match="context vectors .* classes: 3"):
        open_dataset(d, classes=3)


# --- sweep --data, and a sweep of a spec whose data.path is relative ---------------------------------------


def test_sweep_with_data_and_with_a_relative_data_path(tmp_path, capsys, monkeypatch):
    """Every point of a sweep trains and is scored on the same own data: ``--data`` (made absolute), or
    the spec's relative ``data.path`` read from the spec file's folder even when the sweep runs elsewhere;
    ``--resume`` keeps it, and a --data that is neither folder nor .npz is refused."""
    from augflow_dsl.cli import main

    root = folder(tmp_path / "imgs", n=5)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep-a"
    args = ["--steps", "1", "--eval-images", "2", "--samples", "1", "--json"]
    assert main(["sweep", str(write_spec(tmp_path)), "--data", "imgs", "--set", "train.lr=1e-3,2e-3",
                 "--out", str(out), *args]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert [p["status"] for p in result["points"]] == ["done", "done"]
    sweep_json = json.loads((out / "sweep.json").read_text())
    assert sweep_json["train"]["data"] == str(root.resolve())
    for p in result["points"]:
        cfg = json.loads((Path(p["run"]) / "config.json").read_text())
        assert cfg["options"]["data"] == str(root.resolve())

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    folder(spec_dir / "near", n=5)
    spec = write_spec(spec_dir, extra=', dataset: folder, path: "near"')
    monkeypatch.chdir("/")  # the spec's relative path is the spec file's, not the working folder's
    out_b = tmp_path / "sweep-b"
    assert main(["sweep", str(spec), "--set", "train.lr=1e-3", "--out", str(out_b), *args]) == 0, \
        capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["points"][0]["status"] == "done"
    assert json.loads((out_b / "sweep.json").read_text())["train"]["data"] == str((spec_dir / "near").resolve())
    assert main(["sweep", "--resume", str(out_b), "--json"]) == 0  # nothing left to train; same data
    capsys.readouterr()
    assert main(["sweep", "--resume", str(out_b), "--data", str(root)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "c"),
                 *args]) == 1
    assert "no such folder or file" in capsys.readouterr().err
