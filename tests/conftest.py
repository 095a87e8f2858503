"""Test-session settings and shared helpers.

One torch thread per process: the suite runs many tiny tensor ops; on a 2-core machine torch's
default two intra-op threads spin against each other (and against pytest-xdist's second worker),
which makes small ops up to 100x slower. Parallelism comes from ``pytest -n 2`` instead.

Seeds: a test that needs randomness takes the ``seed`` fixture, zlib.crc32 of its test id (the
same in every process and run, unlike ``hash``, which Python salts per process); torch is seeded
with it and a failing test's report shows it, so a failure reproduces from its id alone.

The spec-language and `check` tests share BASE, ``mutate`` and ``run_cli``.
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pytest

try:
    import torch
except ImportError:  # the spec-only tests run without torch
    torch = None

if torch is not None:
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = ROOT / "specs"
SPEC_FILES = sorted(SPECS_DIR.glob("*.flow"))

# A small valid spec (DenseFlow's design at toy scale) that the malformed-spec corpus breaks one
# thing at a time. Line numbers in tests/test_spec_errors.py refer to this text:
#   1 flow  2 let  3 data  4 module glow  5 stages:  6 - squeeze  7 - block 1  8 - squeeze_and_drop
#   9 - block 2  10 prior
BASE = """\
flow: tiny
let: {width: 16, growth: 2, units: 2}
data: {shape: [4, 8, 8], bits: 5}
module glow: [actnorm, conv1x1(param: lu), affine_coupling(net: glow_net(filters: width)), swap]
stages:
  - squeeze
  - block: {units: units, modules: 2 * glow, augment: cross_unit(growth: growth)}
  - squeeze_and_drop
  - block: {units: 1, modules: [glow]}
prior: learned_normal
"""


def load_example(name: str):
    """``examples/<name>.py`` imported as module ``name`` (registered in sys.modules first: its
    dataclasses look their module up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def mutate(old: str, new: str, text: str = BASE) -> str:
    """``text`` with the single occurrence of ``old`` replaced by ``new`` (fails if not exactly one)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 60):
    """Run ``augflow-dsl ARGS`` in a subprocess; returns the CompletedProcess."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "augflow_dsl.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


_TORCH_BLOCKED = """\
import atexit, sys
class _BlockTorch:
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            _BlockTorch.tried.append(name)
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _BlockTorch())
atexit.register(lambda: _BlockTorch.tried and print("TORCH IMPORTED:", _BlockTorch.tried, file=sys.stderr))
"""


def assert_torch_free(code: str, timeout: float = 120):
    """Run ``code`` in a fresh interpreter in which importing torch fails, and assert that it exits 0
    and never tried (not even inside a try/except); returns the CompletedProcess."""
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _TORCH_BLOCKED + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TORCH IMPORTED" not in proc.stderr, proc.stderr[-3000:]
    return proc


def seed_of(nodeid: str) -> int:
    """The seed of the test with pytest id ``nodeid``."""
    return zlib.crc32(nodeid.encode())


@pytest.fixture
def seed(request) -> int:
    """zlib.crc32 of this test's id; torch's generator is seeded with it."""
    s = seed_of(request.node.nodeid)
    if torch is not None:
        torch.manual_seed(s)
    return s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    parametrized = getattr(getattr(item, "callspec", None), "params", {})
    if report.failed and "seed" in getattr(item, "fixturenames", ()) and "seed" not in parametrized:
        report.sections.append(("seed", f"seed = zlib.crc32({item.nodeid!r}) = {seed_of(item.nodeid)}"))


@pytest.fixture(scope="session")
def base_text() -> str:
    return BASE


@pytest.fixture
def float64():
    """Run a test in float64 (torch's default dtype restored after): round trips and log-dets
    against the autograd Jacobian at float precision. Use with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def op_call(name: str, **args):
    """An OpCall of registered op ``name`` with ``args`` validated by its argument model."""
    from augflow_dsl.ops.registry import OpCall, get
    return OpCall(name, get(name).Args(**args))
