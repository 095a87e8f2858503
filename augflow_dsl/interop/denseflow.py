"""DenseFlow's PyTorch checkpoints (matejgrcic/DenseFlow) onto a compiled DenseFlow spec.

The authors' training code saves ``{'model': state_dict, 'optimizer': ..., 'current_epoch': ...}``
(experiments/image/experiment/base.py:95-104); a bare state dict is read too, and ``module.``
prefixes (their DataParallelDistribution) are stripped. Names, from the reference's
``DenseFlow`` (experiments/image/model/dense_flow.py:22-69):

* ``transforms.0``: variational dequantization; ``.encoder.context_init.{1,2,3}`` the context
  net, ``.encoder.base_dist`` its Gaussian, ``.encoder.transforms.{i}`` 1x1 convs and conditional
  couplings (model/dequantization.py:42-86); ``ldj_per_dim`` = -ln 2^bits.
* ``transforms.1``: the -0.5 shift (``_shift``, ``_scale``); ``transforms.2``: squeeze (no tensors).
* ``transforms.{3,5,7}``: dense blocks; ``.blocks.{unit}.transforms.{module}.transforms.{0..2}``:
  ActNorm, 1x1 conv, affine coupling (flow_modules.py:85-92); ``.noise_params.{k}``: cross-unit g.
* ``transforms.{4,6}``: squeeze-and-drop (``dist.buffer``); ``base_dist``: the final prior.

Conversions: ActNorm z = (x - shift) e^{-log_scale} (bijections/actnorm.py) becomes ours
y = x e^{s} + b with s = -log_scale, b = -shift e^{-log_scale}; [1, C, 1, 1] Gaussians become
[C, 1, 1]; everything else is copied. The reference's Nystrom attention forms tokens from runs of
one channel, so the imported spec's ``dense_attention`` gets ``tokens: channel_runs``.
"""
from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .mapping import ImportMismatch, WeightMap
from .walk import key_prefix, parts

TOKENS = "channel_runs"


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a DenseFlow checkpoint (ImportMismatch if it is none)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except FileNotFoundError:
        raise ImportMismatch(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportMismatch(f"{path}: a folder, not a checkpoint file") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in text:
            what = text[text.index("Unsupported global"):].split(" was not")[0]
            raise ImportMismatch(f"{path}: holds Python objects beyond tensors and plain containers ({what}); "
                                 "if you trust the file, add --trust-pickle") from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
        raise ImportMismatch(f"{path}: not a readable PyTorch checkpoint ({first[:160]})") from None
    sd = obj.get("model") if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ImportMismatch(f"{path}: neither a DenseFlow training checkpoint (a dict with a 'model' state "
                             "dict) nor a state dict")
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def reference_spec_text(text: str) -> str:
    """``text`` with every ``dense_attention(...)`` attending in the reference's token layout."""
    def fix(m: re.Match) -> str:
        args = m.group(2)
        if re.search(r"\btokens\s*:", args):
            return m.group(1) + re.sub(r"\btokens\s*:\s*\w+", f"tokens: {TOKENS}", args) + ")"
        return m.group(1) + f"tokens: {TOKENS}, " + args + ")"
    return re.sub(r"(\bdense_attention\s*\()([^()]*(?:\([^()]*\)[^()]*)*)\)", fix, text)


def _dense_block(ours: str, ref: str, depth: int) -> list[tuple[str, str]]:
    """Our DenseBlock (layers.{i}.net.{0,2}, gate.conv) -> theirs ({i}.nn.{0,2}, {depth}.conv)
    (nn/blocks/denseblock.py)."""
    return [(rf"{ours}layers\.(\d+)\.net\.([02])\.(weight|bias)", rf"{ref}\1.nn.\2.\3"),
            (rf"{ours}gate\.conv\.(weight|bias)", rf"{ref}{depth}.conv.\1")]


def _depth(module: nn.Module, prefix: str) -> int:
    idx = {int(m.group(1)) for k in module.state_dict(keep_vars=True)
           if (m := re.match(rf"{prefix}layers\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _gaussian(wmap: WeightMap, pre: str, module: nn.Module, ref: str) -> None:
    for name in ("loc", "log_scale"):
        t = getattr(module, name, None)
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            wmap.copy(pre + name, ref + name, t.shape, (1, *t.shape))


def _actnorm(wmap: WeightMap, pre: str, m: nn.Module, ref: str) -> None:
    shape = tuple(m.log_scale.shape)
    rs = (1, *shape)
    wmap.add(pre + "log_scale", [ref + "log_scale"], [rs], lambda ls, s=shape: -ls.reshape(s))
    wmap.add(pre + "bias", [ref + "shift", ref + "log_scale"], [rs, rs],
             lambda sh, ls, s=shape: (-sh * torch.exp(-ls)).reshape(s))
    wmap.add(pre + "initialized", [ref + "initialized"], [(1,)], lambda i: (i > 0).reshape(()))


def weight_map_for(model: nn.Module) -> WeightMap:
    """Where each tensor of a DenseFlow checkpoint goes in ``model`` (a compiled DenseFlow spec)."""
    wmap = WeightMap()
    p, pre = parts(model), key_prefix(model)
    if p.dequant is not None:
        wmap.constant("transforms.0.ldj_per_dim", (), -(model.bits or 0) * math.log(2))
        enc = "transforms.0.encoder."
        if p.dequant.context is not None:
            c = p.dequant.context
            rules = (_dense_block(r"net\.0\.", f"{enc}context_init.1.", _depth(c, r"net\.0\."))
                     + [(r"net\.1\.(weight|bias)", rf"{enc}context_init.2.\1")]
                     + _dense_block(r"net\.2\.", f"{enc}context_init.3.", _depth(c, r"net\.2\.")))
            wmap.rename(c, pre(c), rules)
        _gaussian(wmap, pre(p.dequant.base), p.dequant.base, f"{enc}base_dist.")
        for i, layer in enumerate(p.dequant.flow):
            kind, r = type(layer).__name__, f"{enc}transforms.{i}."
            if kind == "Conv1x1":
                wmap.rename(layer, pre(layer), [(r"mats\.0\.weight", rf"{r}weight")])
            elif kind == "AffineCoupling":
                t = f"{r}coupling_net.0.transform."
                rules = ([(r"net\.net\.0\.(weight|bias)", rf"{t}0.\1")]
                         + _dense_block(r"net\.net\.1\.", f"{t}1.dense.", _depth(layer, r"net\.net\.1\."))
                         + [(r"net\.net\.2\.(weight|bias)", rf"{t}2.\1")])
                wmap.rename(layer, pre(layer), rules)
            elif kind == "Sigmoid":
                wmap.constant(f"{r}temperature", (1,), 1.0)
    for i, layer in enumerate(p.then):
        if type(layer).__name__ == "Shift":
            wmap.constant(f"transforms.{1 + i}._shift", (), layer.by)
            wmap.constant(f"transforms.{1 + i}._scale", (), 1.0)
    t, unit, module = 3, 0, -1  # transforms.3 is the first dense block (after dequantize, shift, squeeze)
    for layer in p.steps:
        kind, m = type(layer).__name__, pre(layer)
        r = f"transforms.{t}.blocks.{unit}.transforms.{module}.transforms."
        if kind == "ActNorm":
            module += 1
            _actnorm(wmap, m, layer, f"transforms.{t}.blocks.{unit}.transforms.{module}.transforms.0.")
        elif kind == "Conv1x1":
            wmap.rename(layer, m, [(r"mats\.0\.weight", rf"{r}1.weight")])
        elif kind == "AffineCoupling":
            d = f"{r}2.coupling_net.0.dn.transform."
            rules = ([(r"net\.proj_in\.(weight|bias)", rf"{d}0.\1"),
                      (r"net\.attn\.qkv\.(weight|bias)", rf"{d}1.mha.qkv.\1"),
                      (r"net\.attn\.out\.(weight|bias)", rf"{d}1.mha.out_transform.\1"),
                      (r"net\.fuse\.0\.(\w+)", rf"{d}1.mix_conv.0.\1"),
                      (r"net\.fuse\.2\.weight", rf"{d}1.mix_conv.2.weight"),
                      (r"net\.proj_out\.(weight|bias)", rf"{d}2.\1")]
                     + _dense_block(r"net\.dense\.", f"{d}1.dense.", _depth(layer, r"net\.dense\.")))
            wmap.rename(layer, m, rules)
        elif kind == "CrossUnit":
            g = f"transforms.{t}.noise_params.{unit}.transformation."
            wmap.rename(layer, m, [(r"g\.net\.([02])\.(weight|bias)", rf"{g}\1.\2")])
            unit, module = unit + 1, -1
        elif kind == "SqueezeAndDrop":
            wmap.constant(f"transforms.{t + 1}.dist.buffer", (1,), 0.0)
            t, unit, module = t + 2, 0, -1
    if p.prior is not None:
        _gaussian(wmap, pre(p.prior), p.prior, "base_dist.")
    return wmap
