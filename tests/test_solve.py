"""`augflow-dsl solve`: each answer is compared with a brute-force scan of the full `check` over the
same box (the largest valid count at or under the budget, or the nearest, ties to the spec's own
values), on counts that are non-monotone, invalid at some values (VFlow's D_H must be a multiple of
its 4 heads), quasi-polynomial (DenseFlow-style cross-unit growth changes the count with its parity)
and in two variables; then the README's answers, the JSON shape and the refusals."""
from __future__ import annotations

import functools
import itertools
import json

import pytest

from augflow_dsl import cli
from augflow_dsl import check
from augflow_dsl.language.load import load
from augflow_dsl.tools.solve import SolveError, SolveUsageError, parse_budget, parse_range, solve
from conftest import ROOT, run_cli

VFLOW = str(ROOT / "specs/vflow6ch.flow")
DIGITS = str(ROOT / "specs/digits-small.flow")
TOY = str(ROOT / "specs/toy-glow3.flow")

# The count rises then falls in `a` (more modules, each narrower) and odd `a` is invalid (width
# 48 - 2a is then not a multiple of the 4 heads): 2 -> 417,176, 4 -> 484,032, 6 -> 515,192,
# 8 -> 515,840, 10 -> 491,160, 12 -> 446,336, ..., 22 -> 101,496.
NONMONOTONE = """\
flow: nonmono
let: {a: 4, width: 48 - 2 * a, heads: 4}
data: {shape: [4, 8, 8], bits: 5}
module glow: [actnorm, conv1x1(param: lu),
              affine_coupling(net: conv_attention(filters: width, blocks: 1, heads: heads, dropout: 0.0)), swap]
stages:
  - squeeze
  - block: {units: 2, modules: 2 * glow, augment: cross_unit(growth: 2)}
  - squeeze_and_drop
  - block: {units: 1, modules: a * glow}
prior: learned_normal
"""


@pytest.fixture(scope="module")
def nonmono(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("solve") / "nonmono.flow"
    path.write_text(NONMONOTONE)
    return str(path)


@functools.lru_cache(maxsize=None)
def _checked(path: str, sets: tuple[str, ...]) -> int | None:
    report = check(path, list(sets))
    return report.parameters.total if report.valid else None


def brute(path: str, budget: int, box: dict[str, tuple[int, int]], nearest: bool = False):
    """The answer by checking every point of the box: (values, count), or None."""
    names = list(box)
    own = load(path).variables
    start = {n: min(max(own[n], lo), hi) for n, (lo, hi) in box.items()}
    best = None
    for point in itertools.product(*(range(lo, hi + 1) for lo, hi in box.values())):
        count = _checked(path, tuple(f"{n}={v}" for n, v in zip(names, point)))
        if count is None or (not nearest and count > budget):
            continue
        dist = sum(abs(v - start[n]) for n, v in zip(names, point))
        key = (abs(count - budget), count > budget, dist, point) if nearest else (budget - count, dist, point)
        if best is None or key < best[0]:
            best = (key, dict(zip(names, point)), count)
    return None if best is None else (best[1], best[2])


def answer(path: str, budget: int, box: dict[str, tuple[int, int]], nearest: bool = False):
    try:
        sol = solve(path, budget, list(box), nearest=nearest, ranges=box)
    except SolveError:
        return None
    assert sol.set == [f"{n}={v}" for n, v in sol.values.items()]
    return sol.values, sol.parameters


# ------------------------------------------------------------------------------ against brute force
@pytest.mark.parametrize("budget, nearest, values", [
    (20_000_000, False, {"filters": 56}),   # 57..59 are predicted closer but invalid; 60 is over
    (19_200_000, True, {"filters": 56}),
    (17_654_556, False, {"filters": 52}),   # exactly a count
    (21_700_000, True, {"filters": 60}),    # 61..63 invalid; 64 (22.65M) is farther
])
def test_vflow_dh_skips_values_that_are_not_multiples_of_the_heads(budget, nearest, values):
    box = {"filters": (48, 64)}
    expected = brute(VFLOW, budget, box, nearest)
    assert expected[0] == values
    assert answer(VFLOW, budget, box, nearest) == expected


@pytest.mark.parametrize("budget, nearest, a", [(450_000, False, 12), (500_000, True, 10), (515_500, False, 6),
                                                (515_839, False, 6), (515_841, False, 8), (300_000, True, 16)])
def test_non_monotone_count_with_invalid_values(nonmono, budget, nearest, a):
    box = {"a": (1, 23)}
    expected = brute(nonmono, budget, box, nearest)
    assert expected[0] == {"a": a}
    assert answer(nonmono, budget, box, nearest) == expected


def test_non_monotone_count_default_range_reaches_past_the_peak(nonmono):
    # a = 4 is the spec's value; the default range must not stop at the peak (a = 8)
    sol = solve(nonmono, 450_000, "a")
    assert (sol.values, sol.parameters) == ({"a": 12}, 446_336)
    assert sol.ranges["a"][1] >= 23


@pytest.mark.parametrize("budget, nearest", [(100_000, False), (100_000, True), (150_000, False),
                                             (230_000, True), (60_000, False)])
def test_growth_whose_parity_changes_the_count(budget, nearest):
    box = {"growth": (1, 16)}
    assert answer(DIGITS, budget, box, nearest) == brute(DIGITS, budget, box, nearest)


@pytest.mark.parametrize("budget, nearest", [(63_557, True), (65_751, False), (69_000, False), (72_000, True)])
def test_two_variables_jointly_with_a_parity_effect(budget, nearest):
    box = {"growth": (1, 6), "width": (10, 14)}
    assert answer(DIGITS, budget, box, nearest) == brute(DIGITS, budget, box, nearest)


@pytest.mark.parametrize("budget, nearest", [(1500, False), (1000, True), (1234, True), (700, False)])
def test_two_variables_jointly(budget, nearest):
    box = {"steps": (1, 5), "hidden": (4, 16)}
    assert answer(TOY, budget, box, nearest) == brute(TOY, budget, box, nearest)


def test_no_value_fits_names_the_fewest():
    box = {"growth": (1, 6)}
    assert brute(DIGITS, 70_000, box) is None
    with pytest.raises(SolveError, match=r"no value of growth in growth 1\.\.6 gives at most 70,000 parameters: "
                                         r"the fewest is 78,418 \(growth=1\)"):
        solve(DIGITS, 70_000, "growth", ranges=box)


def test_set_fixes_another_variable():
    sol = solve(DIGITS, 100_000, "growth", overrides=["width=24"], ranges={"growth": (1, 12)})
    assert sol.set == ["width=24", f"growth={sol.values['growth']}"]
    assert check(DIGITS, sol.set).parameters.total == sol.parameters
    assert (sol.values, sol.parameters) == brute_with(DIGITS, 100_000, {"growth": (1, 12)}, ["width=24"])


def brute_with(path, budget, box, sets):
    (name, (lo, hi)), = box.items()
    counts = {v: _checked(path, tuple(sets + [f"{name}={v}"])) for v in range(lo, hi + 1)}
    v = max((v for v, c in counts.items() if c is not None and c <= budget), key=lambda v: counts[v])
    return {name: v}, counts[v]


# ------------------------------------------------------------------------------ the README's answers
def test_readme_vflow_dh_for_19_2m():
    sol = solve(VFLOW, "19.2M", "filters", nearest=True)
    assert (sol.values, sol.parameters) == ({"filters": 56}, 19_235_336)
    # the repository's D_H 56 spec, and check with the printed --set, agree
    assert check(str(ROOT / "specs/vflow6ch-dh56.flow")).parameters.total == 19_235_336
    report = check(VFLOW, sol.set)
    assert report.valid and report.parameters.total == 19_235_336


def test_readme_budget_vflow4ch_the_size_of_budget_vflow6ch():
    target = check(str(ROOT / "specs/budget-vflow6ch.flow")).parameters.total
    assert target == 11_020_736
    path = str(ROOT / "specs/budget-vflow4ch.flow")
    sol = solve(path, target, ["filters", "blocks"], nearest=True)
    assert (sol.values, sol.parameters) == ({"filters": 36, "blocks": 12}, 10_981_628)
    assert sol.ranges == {"filters": (1, 64), "blocks": (1, 22)}
    # no point of the box is nearer: the nearest valid counts around it are farther
    for f, b in [(32, 14), (36, 13), (40, 10)]:
        assert abs(_checked(path, (f"filters={f}", f"blocks={b}")) - target) > abs(sol.parameters - target)


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text, value", [("20M", 20_000_000), ("19.2M", 19_200_000), ("4M", 4_000_000),
                                         ("130647294", 130_647_294), ("1.5G", 1_500_000_000), ("500k", 500_000),
                                         ("31,443,440", 31_443_440), ("4m", 4_000_000), (" 2.5 M ", 2_500_000)])
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["20X", "M", "", "-4M", "0", "1.0000005M", "1,23", "4e6", "1.5.2M"])
def test_parse_budget_refuses(text):
    with pytest.raises(SolveUsageError):
        parse_budget(text)


def test_parse_range():
    assert parse_range("filters=32:128") == ("filters", (32, 128))
    for bad in ("filters=9:3", "filters", "filters=a:b", "=1:2"):
        with pytest.raises(SolveUsageError):
            parse_range(bad)


# ------------------------------------------------------------------------------ the command
def _main(*argv: str, capsys) -> tuple[int, str, str]:
    """``augflow-dsl ARGV`` in this process (cli.main); exit code, standard output and error."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_in_a_process():
    proc = run_cli("solve", "specs/vflow6ch.flow", "--params", "19.2M", "--vary", "filters", "--nearest", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert json.loads(proc.stdout) == {"values": {"filters": 56}, "parameters": 19235336, "set": ["filters=56"]}


def test_cli_text(capsys):
    code, out, err = _main("solve", VFLOW, "--params", "20M", "--vary", "filters", capsys=capsys)
    assert code == 0 and err == ""
    assert out.splitlines()[:3] == ["filters = 56", "parameters: 19,235,336  (budget 20,000,000: -764,664, -3.82%)",
                                    "--set filters=56"]


@pytest.mark.parametrize("argv, code, message", [
    (["--vary", "filtrs"], 1, "the spec defines no variable 'filtrs' (did you mean 'filters'?)"),
    (["--vary", "dropout"], 1, "variable 'dropout' is 0.2, not an integer"),
    (["--vary", "filters", "--set", "filters=8"], 2, "'filters' is both varied and fixed with --set"),
    (["--vary", "filters", "--vary", "filters"], 2, "named twice"),
    (["--vary", "filters", "--range", "blocks=1:4"], 2, "'blocks' is not varied"),
    (["--vary", "filters", "--range", "filters=9:3"], 2, "LO 9 is above HI 3"),
    (["--vary", "filters", "--set", "train.lr=1e-3"], 2, "train settings do not change the parameter count"),
    (["--vary", "filters", "--set", "nope=3"], 1, "the spec defines no variable 'nope'"),
    (["--vary", "filters", "--params", "0"], 2, "a budget must be a positive number"),
    (["--vary", "filters", "--params", "20X"], 2, "budget '20X': write a number of parameters"),
])
def test_cli_usage_and_spec_errors(argv, code, message, capsys):
    params = [] if "--params" in argv else ["--params", "20M"]
    got, out, err = _main("solve", VFLOW, *params, *argv, capsys=capsys)
    assert got == code
    assert message in " ".join(err.split())
    assert "Traceback" not in err and out == ""


def test_cli_missing_spec_file(capsys):
    got, _, err = _main("solve", "nope.flow", "--params", "4M", "--vary", "filters", capsys=capsys)
    assert got == 2 and "no such spec file: nope.flow" in err


def test_cli_no_value_fits(capsys):
    got, out, err = _main("solve", DIGITS, "--params", "70k", "--vary", "growth", capsys=capsys)
    assert got == 1 and out == ""
    assert "gives at most 70,000 parameters: the fewest is 78,418 (growth=1)" in " ".join(err.split())


def test_cli_no_valid_value(nonmono, capsys):
    got, _, err = _main("solve", nonmono, "--params", "4M", "--vary", "a", "--range", "a=11:11", "--nearest",
                        capsys=capsys)
    assert got == 1 and "no value of a in a 11..11 gives a valid spec" in err
