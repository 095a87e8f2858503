"""2-D toy densities (VFlow Sec. 5; the FFJORD / i-ResNet toy sets), drawn from a torch.Generator.

Every set is an i.i.d. sampler: ``toy_points(name, n, generator)`` returns ``[n, 2]`` float32 and
depends only on the generator's state, so a seed fixes the points on any machine.
``toy_split`` gives the fixed train (1,000,000) / test (10,000) points of a seed. Each set is a
mixture, and ``toy_labelled`` / ``toy_split(..., labels=True)`` also give each point's component
(from the same draws, so the points are bit-identical to the unlabelled ones): the checkerboard's
cell (0..7), the moon (0 upper, 1 lower), the Gaussian's centre k (0..7), the ring (0 innermost .. 3 outermost).
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch

TOY_SETS: tuple[str, ...] = ("checkerboard", "two_moons", "eight_gaussians", "rings")
SPLIT_SIZES: dict[str, int] = {"train": 1_000_000, "test": 10_000}
CHECKERBOARD_LOG_DENSITY = -math.log(32.0)  # uniform on 8 cells of 2x2: the best possible log p(x)
TOY_CLASSES: dict[str, int] = {"checkerboard": 8, "two_moons": 2, "eight_gaussians": 8, "rings": 4}
Labelled = tuple[torch.Tensor, torch.Tensor]  # points [n, 2], component index [n] int64


def checkerboard(n: int, g: torch.Generator) -> Labelled:
    """FFJORD lib/toy_data.py "checkerboard" (i-ResNet's too): x1 = 4 U - 2,
    x2 = U - 2 Bernoulli(1/2) + (floor(x1) mod 2), return 2 (x1, x2).

    floor(x2) = (floor(x1) mod 2) - 2B has the parity of floor(x1), so the support is the 8 cells
    of side 2 in [-4, 4)^2 with floor(x/2) + floor(y/2) even, each with density 1/32."""
    x1 = 4 * torch.rand(n, generator=g) - 2
    b = torch.randint(0, 2, (n,), generator=g).to(x1.dtype)
    x2 = torch.rand(n, generator=g) - 2 * b + torch.remainder(torch.floor(x1), 2)
    cell = 2 * (torch.floor(x1).long() + 2) + b.long()  # column floor(x1) in -2..1, row by b
    return 2 * torch.stack([x1, x2], 1), cell


def two_moons(n: int, g: torch.Generator) -> Labelled:
    """sklearn's make_moons with noise 0.1, scaled as FFJORD does (2 x + (-1, -0.2)), drawn i.i.d.:
    a fair coin picks the upper moon (cos t, sin t) or the lower (1 - cos t, 1/2 - sin t) with
    t ~ U[0, pi) (make_moons spaces t evenly instead), then Gaussian noise of std 0.1."""
    t = math.pi * torch.rand(n, generator=g)
    lower = torch.randint(0, 2, (n,), generator=g).bool()
    x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
    pts = torch.stack([x, y], 1) + 0.1 * torch.randn(n, 2, generator=g)
    return 2 * pts + torch.tensor([-1.0, -0.2]), lower.long()


def eight_gaussians(n: int, g: torch.Generator) -> Labelled:
    """FFJORD "8gaussians": one of 8 centres 4 (cos k pi/4, sin k pi/4) picked uniformly, plus
    N(0, 0.5^2 I) noise, everything divided by 1.414."""
    index = torch.randint(0, 8, (n,), generator=g)
    k = index.to(torch.float32)
    centres = 4 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return (centres + 0.5 * torch.randn(n, 2, generator=g)) / 1.414, index


def rings(n: int, g: torch.Generator) -> Labelled:
    """FFJORD "rings": 4 concentric circles of radius 3 x (1, 0.75, 0.5, 0.25), each point on a
    uniformly picked ring at angle t ~ U[0, 2 pi) (FFJORD spaces n/4 angles evenly per ring),
    plus N(0, 0.08^2 I) noise."""
    index = torch.randint(0, 4, (n,), generator=g)
    radius = 3 * 0.25 * (1 + index.to(torch.float32))
    t = 2 * math.pi * torch.rand(n, generator=g)
    pts = radius[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1)
    return pts + 0.08 * torch.randn(n, 2, generator=g), index


_SAMPLERS: dict[str, Callable[[int, torch.Generator], Labelled]] = {
    "checkerboard": checkerboard, "two_moons": two_moons, "eight_gaussians": eight_gaussians, "rings": rings,
}


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY_SETS)}")


def toy_points(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` i.i.d. points [n, 2] float32 of the toy set ``name``, drawn from ``generator`` (CPU)."""
    return toy_labelled(name, n, generator)[0]


def toy_labelled(name: str, n: int, generator: torch.Generator) -> Labelled:
    """``toy_points`` and each point's mixture component (int64 in 0 .. TOY_CLASSES[name] - 1)."""
    _check_name(name)
    if n < 0:
        raise ValueError(f"toy_points needs n >= 0; got {n}")
    x, y = _SAMPLERS[name](n, generator)
    return x.to(torch.float32).contiguous(), y.contiguous()


def split_seed(name: str, split: str, seed: int) -> int:
    """The generator seed of (name, split, seed): a CRC-32 of the three, so train and test (and
    every set) draw from different streams."""
    return zlib.crc32(f"{name}/{split}/{seed}".encode())


def toy_split(name: str, split: str, seed: int = 0, labels: bool = False) -> torch.Tensor | Labelled:
    """The fixed "train" (1,000,000 points) or "test" (10,000 points) split of ``name`` for ``seed``;
    with ``labels``, (points, components)."""
    _check_name(name)
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    g = torch.Generator().manual_seed(split_seed(name, split, seed))
    x, y = toy_labelled(name, SPLIT_SIZES[split], g)
    return (x, y) if labels else x


__all__ = ["TOY_SETS", "TOY_CLASSES", "SPLIT_SIZES", "CHECKERBOARD_LOG_DENSITY", "toy_points", "toy_labelled",
           "toy_split", "split_seed",
           "checkerboard", "two_moons", "eight_gaussians", "rings"]
