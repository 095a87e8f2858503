"""Context nets of q-networks: read the conditioning data x once, feed every coupling."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Conv, DenseBlock, GatedResNet, Kept, LayerList, Net, Sequential
from .registry import CONTEXT, MemoryIn, Op, OpArgs, OpShapeError, register
from .shapes import need_image
from .supports import REAL, Integers


@register
class GatedContext(Op):
    """Flow++'s context net of r(u|x) (run_cifar.py:25-31): scale x (``input: centered``:
    x/256 - 0.5; ``raw``: as given, VFlow's q on x~), even/odd-column split with the halves
    concatenated on channels (2C x H x W/2), 3x3 conv 2C -> F, ``blocks`` gated convs whose
    second conv is 3x3 (use_nin=False). Output F x H x W/2, the shape of a column half."""

    summary = "Flow++ context net of a q-network: column split, 3x3 conv, gated convs"
    equation = "Flow++ (Ho et al. 2019) Sec. 3.1.2; flowpp run_cifar.py:25-31"
    shape_rule = "C x H x W -> filters x H x W/2 (W even), the shape of one half of a column split"

    name = "gated_context"
    role = CONTEXT

    class Args(OpArgs):
        filters: int = Field(default=32, gt=0, description="output channels F")
        blocks: int = Field(default=3, ge=0, description="number of gated conv blocks")
        input: Literal["centered", "raw"] = Field(default="centered", description=(
            "centered: reads integer data as x / 2^bits - 0.5 (a dequantizer's r(u|x)); raw: reads x as given"))
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout rate inside the gated convs")

    def domain(self, a, bits):
        """``centered`` computes x / 2^bits - 0.5: it reads integer data of ``bits``; ``raw`` reads anything."""
        return Integers(bits) if a.input == "centered" else REAL

    def domain_fix(self, a):
        return ("`input: centered` rescales integer data by its bit depth; a context that reads continuous "
                "data (an input augmentation's q reads the dequantized x~) should be `gated_context(input: raw)`")

    def out_shape(self, a, shape, env):
        need_image(shape, self.name)
        c, h, w = shape
        if w % 2:
            raise OpShapeError(f"gated_context splits columns: width {w} is odd")
        return (a.filters, h, w // 2)

    def describe(self, a, shape):
        c, h, w = shape
        n = h * (w // 2)
        block = GatedResNet.of(a.filters, n, nin=False, dropout=a.dropout)
        return Net((("proj", Conv(2 * c, a.filters, 3, n, init="data")),
                    ("blocks", LayerList((block,) * a.blocks))))

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """The column halves concatenated (a new tensor, of x scaled when centered), kept by proj;
        then the gated convs."""
        return _fresh_input(self.describe(a, shape), shape[0] * shape[1] * shape[2], m)


@register
class DenseContext(Op):
    """DenseFlow's context net of the dequantizer (dequantization.py:46-61): 2x/(2^bits - 1) - 1,
    dense block C -> F (``depth`` layers, growth ``growth``, gated) at H x W, 2x2 stride-2 conv
    F -> F, dense block F -> F at H/2 x W/2. Output F x H/2 x W/2."""

    summary = "DenseFlow context net of the dequantizer: dense blocks around a stride-2 conv"
    equation = "DenseFlow (Grcic et al. 2021) Sec. 3; DenseFlow dequantization.py:46-61"
    shape_rule = "C x H x W -> filters x H/2 x W/2 (H and W even)"

    name = "dense_context"
    role = CONTEXT

    class Args(OpArgs):
        filters: int = Field(default=64, gt=0, description="output channels F")
        depth: int = Field(default=4, gt=0, description="layers of each dense block")
        growth: int = Field(default=16, gt=0, description="channels each dense layer adds")

    def domain(self, a, bits):
        """2x / (2^bits - 1) - 1: it reads integer data of ``bits``."""
        return Integers(bits)

    def domain_fix(self, a):
        return ("dense_context rescales integer data by its bit depth; a context that reads continuous data "
                "(an input augmentation's q reads the dequantized x~) should be `gated_context(input: raw)` or "
                "`data_context`")

    def out_shape(self, a, shape, env):
        need_image(shape, self.name)
        c, h, w = shape
        if h % 2 or w % 2:
            raise OpShapeError(f"dense_context downsamples by 2: {h}x{w} has an odd side")
        return (a.filters, h // 2, w // 2)

    def describe(self, a, shape):
        c, h, w = shape
        f, n = a.filters, h * w
        return Net((("net", Sequential((
            DenseBlock.of(c, a.depth, a.growth, f, n),
            Conv(f, f, 2, n // 4, stride=2),
            DenseBlock.of(f, a.depth, a.growth, f, n // 4)))),))

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """2x / (2^bits - 1) - 1 (a new tensor), then the dense blocks and the stride-2 conv."""
        return _fresh_input(self.describe(a, shape), shape[0] * shape[1] * shape[2], m)


@register
class DataContext(Op):
    """The conditioning data itself as the context (no parameters): a conditional coupling's
    net reads cat(x1, x). Used by small conditional flows, e.g. VFlow's toy q(z | x)."""

    summary = "the conditioning data itself as a q-network's context (no parameters)"
    equation = "VFlow (Chen et al. 2020) Sec. 5 (toy q(z | x))"
    shape_rule = "the data's shape, unchanged"

    name = "data_context"
    role = CONTEXT

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Returns its input."""
        n = 1
        for s in shape:
            n *= s
        return Kept(Act(n, m.precision.flow), alias="input")


def _fresh_input(net: Net, n: int, m: MemoryIn) -> Kept:
    """A context net whose layers read a new tensor of ``n`` elements made from its input: that
    tensor is its own, the input is not kept."""
    x = Act(n, m.precision.flow)
    k = net.kept(x, m.precision)
    return Kept(k.out, own=k.own + (x.bytes if k.input else 0), fixed=k.fixed)
