"""Class-conditional priors: densities whose parameters are a function of the spec's condition."""
from __future__ import annotations

from .net_descriptions import Act, Kept
from .registry import PRIOR, MemoryIn, Op, OpEnv, OpShapeError, register


def condition_in(env: OpEnv, op: str) -> int:
    """Features of the raw condition a conditional density reads; refuses a spec without one."""
    if env.condition_in is None:
        raise OpShapeError(f"'{op}' is conditioned on the spec's label or context, but the spec declares none: "
                           "add `condition: {classes: K}` (a label) or `condition: {vector: D}` (a context vector)")
    return env.condition_in


@register
class ClassNormal(Op):
    """Class-conditional diagonal Gaussian (Glow's ``ycond``, openai/glow model.py prior(): the
    mean and log-std of every latent channel are a zero-initialised linear map of the one-hot label
    y, broadcast over positions): (mu, log s) = W onehot(y) + b, W: K x 2C, b: 2C. With
    ``condition: {vector: D}`` the same linear map reads the context vector. Glow's ``linear_zeros``
    adds a per-output learned log-scale factor (2C more parameters); we use the plain linear map."""

    summary = "class-conditional Gaussian prior: per-channel mean and log-std from a linear map of the label"
    equation = "Glow (Kingma & Dhariwal 2018) Sec. 5 class-conditional prior; openai/glow model.py prior (ycond)"
    shape_rule = "scores C x H x W (or D) with K x 2C + 2C parameters (K: classes, or the vector's D)"

    name = "class_normal"
    role = PRIOR

    def reads_condition(self, a) -> bool:
        return True

    def params(self, a, shape, env):
        return (condition_in(env, self.name) + 1) * 2 * shape[0]

    def macs(self, a, shape, env):
        return condition_in(env, self.name) * 2 * shape[0]

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Scoring z: the linear map's output (2C per example, broadcast), z - mu, exp(-log s), e and
        -0.5 e (as learned_normal, with the per-example parameters)."""
        b, n = m.precision.flow, _numel(shape)
        return Kept(Act(n if m.base else 0, b), own=(4 if m.base else 3) * n * b + 2 * shape[0] * b)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
