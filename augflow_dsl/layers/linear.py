"""Invertible 1x1 convolution (Glow eq. 9-10), LU-parameterised or full-weight, one or two matrices."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import linear as op_defs
from .base import Bijection, is_transformed
from .registry import implements


def _initial(c: int, init: str, noise: float) -> torch.Tensor:
    if init == "identity":
        return torch.eye(c) + noise * torch.randn(c, c)
    w = torch.empty(c, c)
    nn.init.orthogonal_(w)
    return w


class _Matrix(nn.Module):
    """One invertible C x C matrix: W, its inverse, log|det W|.

    ``lu``: W = P L (U + diag(sign * exp(log_s))) with P and sign fixed (Glow Sec. 3.2):
    log|det W| = sum log_s, O(C) instead of O(C^3). ``full``: W itself, slogdet.

    Where no gradient can flow to the parameters (no grad mode, or frozen parameters), W, W^-1
    and log|det W| are computed once per weight version and reused (:class:`WeightCache`):
    sampling and no-grad evaluation pay no inverse, LU product or slogdet per call. Under
    autograd they are computed afresh on every call, so gradients are always those of the
    current weights.
    """

    def __init__(self, c: int, param: str, init: str, noise: float):
        super().__init__()
        self.param = param
        w = _initial(c, init, noise)
        if param == "full":
            self.weight = nn.Parameter(w)
        else:
            p, l, u = torch.linalg.lu(w)
            s = torch.diagonal(u)
            rows, cols = torch.tril_indices(c, c, -1)
            self.register_buffer("perm", p)
            self.register_buffer("sign", torch.sign(s))
            self.register_buffer("rows", rows)
            self.register_buffer("cols", cols)
            self.register_buffer("eye", torch.eye(c))
            self.c = c
            # exactly C^2 trainable numbers: C(C-1)/2 below, C(C-1)/2 above the diagonal, C on it
            self.lower = nn.Parameter(l[rows, cols].clone())
            self.upper = nn.Parameter(u[cols, rows].clone())
            self.log_s = nn.Parameter(torch.log(torch.abs(s)))
            self.register_buffer("gather", _lu_gather(c), persistent=False)
            self.register_buffer("zero_one", torch.tensor([0.0, 1.0]), persistent=False)
        self.cache = WeightCache()

    def weight_and_logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.get(self, "forward", self._weight_and_logdet)

    def inverse_weight_and_logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W^-1, -log|det W|)."""
        return self.cache.get(self, "inverse", self._inverse_weight_and_logdet)

    def _inverse_weight_and_logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.param == "full":
            w, logdet = self._weight_and_logdet()
            return torch.linalg.inv(w), -logdet
        # W^-1 = U^-1 L^-1 P^T: two triangular solves, no general inverse (about half its time at C <= 48)
        lower, upper = self._factors()
        lp = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lp, upper=True), -self.log_s.sum()

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, U): one gather from [lower, upper, diag(U), 0, 1] (one index_select and its index_add
        backward, instead of two index_put and a diag: at small C the op count is the cost)."""
        values = torch.cat([self.lower, self.upper, self.sign * torch.exp(self.log_s), self.zero_one])
        lower, upper = values.index_select(0, self.gather).view(2, self.c, self.c).unbind(0)
        return lower, upper

    def _weight_and_logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.param == "full":
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        lower, upper = self._factors()
        return self.perm @ lower @ upper, self.log_s.sum()


def _lu_gather(c: int) -> torch.Tensor:
    """Indices into cat([lower, upper, diag(U), 0, 1]) (``_Matrix``) that lay out L (unit lower
    triangle) and U (upper triangle with its diagonal), flattened one after the other: [2 C^2]."""
    m = c * (c - 1) // 2
    zero, one = 2 * m + c, 2 * m + c + 1
    rows, cols = torch.tril_indices(c, c, -1)
    low = torch.full((c, c), zero, dtype=torch.long)
    low[rows, cols] = torch.arange(m)
    low.fill_diagonal_(one)
    up = torch.full((c, c), zero, dtype=torch.long)
    up[cols, rows] = m + torch.arange(m)
    up[range(c), range(c)] = 2 * m + torch.arange(c)
    return torch.cat([low.flatten(), up.flatten()])


class WeightCache:
    """Values derived from a module's weights (an inverse, a log-det), kept per weight version.

    An entry is reused only when no gradient can reach the weights (grad mode off, or no
    parameter requiring grad) and every parameter and buffer of the module still has the
    version counter, storage, dtype and device it had, and the parameters hold equal contents
    (``.data`` writes bypass the version counter; the comparison costs O(C^2) against the O(C^3)
    it saves, and is one ``cat`` and one ``equal`` however many parameters: at C = 2 the check,
    not the inverse, is what a sampling call right after each optimizer step pays). So
    an optimizer step, ``load_state_dict``, ``.to(...)``, EMA swaps and in-place ``.data``
    edits all recompute. Entries made in inference mode serve only inference mode. Not part
    of the state dict."""

    def __init__(self):
        self.entries: dict[str, tuple] = {}

    def get(self, module: nn.Module, name: str, compute):
        if torch.is_grad_enabled() and any(p.requires_grad for p in module._parameters.values()):
            return compute()  # the common training call: no walk over the sources
        if torch.compiler.is_compiling():  # traced into a compiled graph: no Python-side state
            return compute()
        if module._modules:
            sources = [*module.parameters(), *module.buffers()]
        else:  # a leaf module (_Matrix): its own dicts, without the generic walk's bookkeeping
            sources = [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
        if torch.is_grad_enabled() and any(p.requires_grad for p in sources):
            return compute()
        if any(is_transformed(t) for t in sources):  # torch.func (vmap, grad, functional_call): no storage
            return compute()
        key = (torch.is_inference_mode_enabled(),
               *((t._version, t.data_ptr(), t.dtype, t.device, t.shape) for t in sources))
        entry = self.entries.get(name)
        params = [t.detach().reshape(-1) for t in sources if isinstance(t, nn.Parameter)]
        if entry is not None and entry[0] == key:
            if not params or torch.equal(entry[1], torch.cat(params)):
                return entry[2]
        with torch.no_grad():
            value = compute()
        self.entries[name] = (key, torch.cat(params) if params else None, value)
        return value

    def clear(self) -> None:
        self.entries.clear()


@implements(op_defs.Conv1x1)
class Conv1x1(Bijection):
    """y = W x at every position; log|det J| = positions * log|det W| (per half with ``split``)."""

    def __init__(self, shape, param: str = "lu", split: str = "none", init: str = "orthogonal", noise: float = 0.0,
                 bias: bool = False):
        super().__init__()
        self.split = split
        c = shape[0] // 2 if split == "channels" else shape[0]
        n = 1 if split == "none" else 2
        self.mats = nn.ModuleList(_Matrix(c, param, init, noise) for _ in range(n))
        # y = W x + b (NSF's LULinear bias, zero at init); None keeps the state dict of the bias-free op
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape, args.param, args.split, args.init, args.noise, args.bias)

    def _bias(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.view(1, -1, *([1] * (x.dim() - 2)))

    @staticmethod
    def _multiply(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.view(*w.shape, 1, 1))

    def _parts(self, x):
        if self.split == "channels":
            c = x.shape[1] // 2
            return [x[:, :c], x[:, c:]]
        if self.split == "columns":
            return [x[..., 0::2], x[..., 1::2]]
        return [x]

    def _join(self, parts):
        if self.split == "channels":
            return torch.cat(parts, 1)
        if self.split == "columns":
            return torch.stack(parts, -1).flatten(-2)
        return parts[0]

    def _run(self, x, inverse: bool):
        if inverse and self.bias is not None:
            x = x - self._bias(x)
        outs, ld = [], None
        for part, m in zip(self._parts(x), self.mats):
            w, logdet = m.inverse_weight_and_logdet() if inverse else m.weight_and_logdet()
            outs.append(self._multiply(part, w))
            positions = part[0, 0].numel() if part.dim() > 2 else 1
            if positions != 1:
                logdet = logdet * positions
            ld = logdet if ld is None else ld + logdet
        y = self._join(outs)
        if not inverse and self.bias is not None:
            y = y + self._bias(y)
        return y, ld.expand(x.shape[0])  # a 0-dim log-det, one per example (a view: no fill, no multiply)

    def forward(self, x, cond=None):
        return self._run(x, False)

    def inverse_and_logdet(self, y, cond=None):
        return self._run(y, True)
