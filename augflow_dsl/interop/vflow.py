"""VFlow's TensorFlow checkpoints (thu-ml/vflow, flows/run_cifar10.py) onto a compiled VFlow spec.

Their ``train`` (flows/flow_training.py:131-233) saves every global variable with
``tf.train.Saver``: the parameters, their ``<name>/ExponentialMovingAverage`` shadows (EMA 0.999,
used for evaluation and samples), Adam's ``<name>/Adam`` and ``<name>/Adam_1`` slots and
``beta1_power`` / ``beta2_power``. The parameters and the EMA are imported (our ``model`` and
``ema``); the optimizer state is skipped. The file is read by :mod:`.tfcheckpoint` (no
TensorFlow needed; ``augflow-dsl[tf]`` covers the features that reader lacks).

Names come from ``tf.make_template`` scopes numbered in the order the graph calls them: the
dequantizer r(u|x) first (``context_proc``, then ``Norm``, ``Pointwise``,
``MixLogisticAttnCoupling`` 0-3), the posterior q(z|x~) next (``context_proc_1``, 4-7), then the
9 steps of p (8-16) (run_cifar10.py:19-258, flow_training.py:16-22). Conversions (NHWC to NCHW):

* ``Norm_i/norm{0,1}/{g,b}`` [H, W', C'] per half (flows.py:370-406): y = x max(g, 1e-10) + b,
  so our per-element log-scale is log max(g, 1e-10) with the halves put back in place (even /
  odd columns, or first / second channel half);
* ``Pointwise_i/W{0,1}`` (flows.py:413-446): y = x W per half, so our matrices are W^T;
* conv kernels [kh, kw, in, out] -> [out, in, kh, kw]; dense (nin) [in, out] -> [out, in, 1, 1];
  layer norms [1, 1, 1, F] -> [F]; the position embedding [H, W', F] -> [F, H, W'].
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .mapping import ImportMismatch, WeightMap, Shape
from .walk import key_prefix, parts

EMA = "/ExponentialMovingAverage"


def is_optimizer_state(name: str) -> bool:
    """Adam's slots and step powers (and a global step, should a checkpoint have one)."""
    return (name.endswith("/Adam") or name.endswith("/Adam_1") or name in ("beta1_power", "beta2_power")
            or name == "global_step")


class TFCheckpoint:
    """A TensorFlow checkpoint: its prefix (``model-N``, naming ``model-N.index`` and its data
    files) or a folder (its latest checkpoint). Read by :mod:`.tfcheckpoint`; a checkpoint using a
    feature that reader lacks is read by TensorFlow when it is installed."""

    def __init__(self, path: str | Path):
        from .tfcheckpoint import BundleReader, CheckpointFormatError, UnsupportedCheckpoint

        prefix = _latest(Path(path)) if Path(path).is_dir() else str(path)
        if not Path(prefix + ".index").is_file():
            raise ImportMismatch(f"{path}: no TensorFlow checkpoint there (looked for {prefix}.index)")
        self.prefix = prefix
        try:
            reader = BundleReader(prefix)
            self.shapes: dict[str, Shape] = reader.shapes
            self._read = reader.read
        except UnsupportedCheckpoint as e:
            self._with_tensorflow(prefix, str(e))
        except CheckpointFormatError as e:
            raise ImportMismatch(f"{path}: not a readable TensorFlow checkpoint ({e})") from None

    def _with_tensorflow(self, prefix: str, why: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError:
            raise ImportMismatch(f"{prefix}: this checkpoint uses {why}, which only TensorFlow reads: "
                                 "pip install 'augflow-dsl[tf]'") from None
        try:
            reader = tf.train.load_checkpoint(prefix)
            self.shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
        except Exception as e:  # noqa: BLE001 - TF raises its own error kinds for unreadable files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ImportMismatch(f"{prefix}: not a readable TensorFlow checkpoint ({first[:200]})") from None
        self._read = reader.get_tensor

    def read(self, name: str) -> torch.Tensor:
        from .tfcheckpoint import CheckpointFormatError
        try:
            return torch.from_numpy(self._read(name).copy())
        except CheckpointFormatError as e:
            raise ImportMismatch(f"{self.prefix}: {e}") from None


def _latest(folder: Path) -> str:
    """The checkpoint a folder's ``checkpoint`` file names, else its highest-numbered ``*.index``."""
    state = folder / "checkpoint"
    if state.is_file():
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M)
        if m:
            p = Path(m.group(1))
            return str(p if p.is_absolute() else folder / p)
    found = sorted(folder.glob("*.index"), key=lambda p: [int(t) for t in re.findall(r"\d+", p.stem)] or [-1])
    if not found:
        raise ImportMismatch(f"{folder}: a folder with no TensorFlow checkpoint in it")
    return str(found[-1].with_suffix(""))


def _scope(kind: str, i: int) -> str:
    return kind if i == 0 else f"{kind}_{i}"


def _ref_shape(kind: str, shape: Shape) -> Shape:
    if kind == "conv":  # ours [out, in, kh, kw], theirs [kh, kw, in, out]
        return (shape[2], shape[3], shape[1], shape[0])
    if kind == "matrix":  # ours [out, in, 1, 1], theirs [in, out]
        return (shape[1], shape[0])
    if kind == "pos":  # ours [F, H, W'], theirs [H, W', F]
        return (shape[1], shape[2], shape[0])
    if kind == "ln":  # ours [F], theirs [1, 1, 1, F]
        return (1, 1, 1, shape[0])
    return shape


CONVERT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "conv": lambda t: t.permute(3, 2, 0, 1),
    "matrix": lambda t: t.t()[:, :, None, None],
    "pos": lambda t: t.permute(2, 0, 1),
    "ln": lambda t: t.reshape(-1),
    "same": lambda t: t,
}


def _map(wmap: WeightMap, module: nn.Module, prefix: str, rules: list[tuple[str, str, str]], scope: str) -> None:
    """Every tensor of ``module`` whose local name matches a rule (regex, TF name, kind; first match
    wins) comes from ``scope/<TF name>``; DataInitConv2d's ``initialized`` flags are set."""
    compiled = [(re.compile(rx), rep, kind) for rx, rep, kind in rules]
    for local, t in module.state_dict(keep_vars=True).items():
        if local.endswith("initialized"):
            wmap.fixed[prefix + local] = torch.tensor(True)
            continue
        for rx, rep, kind in compiled:
            if rx.fullmatch(local):
                shape = tuple(t.shape)
                wmap.copy(prefix + local, f"{scope}/{rx.sub(rep, local)}", shape, _ref_shape(kind, shape),
                          CONVERT[kind])
                break


def _gated(ours: str, theirs: str, second: str) -> list[tuple[str, str, str]]:
    """A gated conv (flows.py gated_conv): c1 3x3, a_proj nin on the context, c2 nin or 3x3."""
    return [(rf"{ours}conv1\.weight", rf"{theirs}c1/W", "conv"), (rf"{ours}conv1\.bias", rf"{theirs}c1/b", "same"),
            (rf"{ours}ctx\.weight", rf"{theirs}a_proj/W", "matrix"), (rf"{ours}ctx\.bias", rf"{theirs}a_proj/b", "same"),
            (rf"{ours}conv2\.weight", rf"{theirs}c2/W", second), (rf"{ours}conv2\.bias", rf"{theirs}c2/b", "same")]


COUPLING_NET = ([(r"net\.pos", "pos_emb", "pos"),
                 (r"net\.proj_in\.weight", "proj_in/W", "conv"), (r"net\.proj_in\.bias", "proj_in/b", "same"),
                 (r"net\.proj_out\.weight", "proj_out/W", "conv"), (r"net\.proj_out\.bias", "proj_out/b", "same"),
                 (r"net\.blocks\.(\d+)\.1\.norm\.weight", r"block\1/ln1/g", "ln"),
                 (r"net\.blocks\.(\d+)\.1\.norm\.bias", r"block\1/ln1/b", "ln"),
                 (r"net\.blocks\.(\d+)\.3\.norm\.weight", r"block\1/ln2/g", "ln"),
                 (r"net\.blocks\.(\d+)\.3\.norm\.bias", r"block\1/ln2/b", "ln"),
                 (r"net\.blocks\.(\d+)\.2\.qkv\.weight", r"block\1/attn/proj1/W", "matrix"),
                 (r"net\.blocks\.(\d+)\.2\.qkv\.bias", r"block\1/attn/proj1/b", "same"),
                 (r"net\.blocks\.(\d+)\.2\.proj\.weight", r"block\1/attn/proj2/W", "matrix"),
                 (r"net\.blocks\.(\d+)\.2\.proj\.bias", r"block\1/attn/proj2/b", "same")]
                + _gated(r"net\.blocks\.(\d+)\.0\.", r"block\1/conv/", "matrix"))


def _context(proj: str, block: str) -> list[tuple[str, str, str]]:
    """The q-networks' context nets (run_cifar10.py:36-46, 99-109): proj 3x3, gated convs with 3x3 c2."""
    return ([(r"proj\.weight", f"{proj}/W", "conv"), (r"proj\.bias", f"{proj}/b", "same")]
            + _gated(r"blocks\.(\d+)\.", rf"{block}\1/", "conv"))


def _halves(split: str, shape: Shape, parts_: list[torch.Tensor]) -> torch.Tensor:
    """Per-half TF tensors [H, W', C'] -> our [C, H, W] (even / odd columns or channel halves)."""
    if split == "columns":
        return torch.stack(parts_, -1).permute(2, 0, 1, 3).reshape(shape)
    return torch.cat(parts_, -1).permute(2, 0, 1)


class _Counter:
    def __init__(self):
        self.n: dict[str, int] = {}

    def next(self, kind: str) -> str:
        i = self.n.get(kind, 0)
        self.n[kind] = i + 1
        return _scope(kind, i)


def _steps(wmap: WeightMap, layers: list[nn.Module], pre, count: _Counter) -> None:
    for layer in layers:
        kind, m = type(layer).__name__, pre(layer)
        if kind == "ActNorm" and layer.per == "element" and layer.split in ("columns", "channels"):
            scope, shape = count.next("Norm"), tuple(layer.log_scale.shape)
            c, h, w = shape
            half = (h, w // 2, c) if layer.split == "columns" else (h, w, c // 2)
            refs = [f"{scope}/norm0/g", f"{scope}/norm1/g"]
            wmap.add(m + "log_scale", refs, [half, half],
                     lambda g0, g1, sp=layer.split, s=shape: torch.log(_halves(sp, s, [g0, g1]).clamp(min=1e-10)))
            wmap.add(m + "bias", [f"{scope}/norm0/b", f"{scope}/norm1/b"], [half, half],
                     lambda b0, b1, sp=layer.split, s=shape: _halves(sp, s, [b0, b1]))
            wmap.fixed[m + "initialized"] = torch.tensor(True)
        elif kind == "Conv1x1" and layer.split in ("columns", "channels"):
            scope = count.next("Pointwise")
            for i, mat in enumerate(layer.mats):
                if getattr(mat, "param", None) == "full":
                    wmap.copy(f"{m}mats.{i}.weight", f"{scope}/W{i}", tuple(mat.weight.shape), convert=lambda t: t.t())
        elif kind == "MixtureCoupling":
            _map(wmap, layer, m, COUPLING_NET, count.next("MixLogisticAttnCoupling"))


def weight_map_for(model: nn.Module) -> WeightMap:
    """Where each variable of a VFlow checkpoint goes in ``model`` (a compiled VFlow spec). Names
    are the parameters' own; EMA shadows and optimizer slots are handled by :func:`import_vflow`."""
    wmap = WeightMap(ignore=lambda k: is_optimizer_state(k) or k.endswith(EMA))
    p, pre = parts(model), key_prefix(model)
    count = _Counter()
    for q, (proj, block) in ((p.dequant, ("proj", "c")), (p.augment, ("proj_q", "q_c"))):
        if q is None:
            continue
        if q.context is not None:
            _map(wmap, q.context, pre(q.context), _context(proj, block), count.next("context_proc"))
        _steps(wmap, q.flow, pre, count)
    _steps(wmap, p.steps, pre, count)
    return wmap


def ema_shapes(shapes: dict[str, Shape]) -> dict[str, Shape] | None:
    """The EMA shadows' shapes under their variables' names (None when there are none)."""
    ema = {k[:-len(EMA)]: v for k, v in shapes.items() if k.endswith(EMA)}
    return ema or None
