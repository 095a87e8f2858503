"""Fuzzing the parser and the checker with hypothesis: mutations of the shipped specs (characters
deleted, inserted or replaced, lines swapped or duplicated, tokens replaced, random bytes) may
only ever raise SpecError from ``loads``, and ``check`` must never raise at all."""
from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import augflow_dsl as af
from augflow_dsl.errors import SpecError

from conftest import BASE, SPEC_FILES

TEXTS = [BASE] + [p.read_text() for p in SPEC_FILES]

# fragments that reach deep into the language: structure, op and argument names, odd numbers
FRAGMENTS = [":", ",", "(", ")", "[", "]", "{", "}", "-", "*", "/", "//", "+", "#", '"', "'", ".", "=", "\n",
             "\n  ", "\n    - ", "  ", "\t", "\x00", "\u2028", "é", "0", "1", "2", "3", "-1", "2.5", "1e400", "1e9",
             "999999999999999999999", "glow", "step", "squeeze", "unsqueeze", "swap", "block", "sigmoid",
             "factor_out", "squeeze_and_drop", "cross_unit(growth: 3)", "input(channels: 1, q: dequant)",
             "glow_net(filters: 4)", "mlp(hidden: 2)", "learned_normal", "units: 0", "units: 3",
             "split: columns", "split: channels", "split: checkerboard", "columns", "channels", "true", "none",
             "module ", "net ", "q ", "let", "stages", "prior", "data", "dequantize", "augment", "train",
             "10 * ", "0 * ", "1000000 * ", "factor: 0", "factor: 3", "components: 0", "heads: 3"]
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\S")


def _at(text: str, frac: float) -> int:
    return min(int(frac * (len(text) + 1)), len(text))


edits = st.one_of(
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 12)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(FRAGMENTS)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.text(max_size=4)),
    st.tuples(st.just("replace"), st.floats(0, 1), st.sampled_from(FRAGMENTS)),
    st.tuples(st.just("swap_lines"), st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("duplicate_line"), st.floats(0, 1), st.integers(1, 3)),
    st.tuples(st.just("delete_line"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("replace_token"), st.floats(0, 1), st.sampled_from(FRAGMENTS)),
    st.tuples(st.just("number"), st.floats(0, 1), st.sampled_from([0, 1, 2, 3, 5, 7, 31, 33, 64, 10**6, 10**19])),
)


def apply(text: str, edit) -> str:
    kind, where, arg = edit
    if kind == "delete":
        i = _at(text, where)
        return text[:i] + text[i + arg:]
    if kind == "insert":
        i = _at(text, where)
        return text[:i] + arg + text[i:]
    if kind == "replace":
        i = _at(text, where)
        return text[:i] + arg + text[i + 1:]
    lines = text.split("\n")
    j = min(int(where * len(lines)), len(lines) - 1)
    if kind == "swap_lines":
        k = min(int(arg * len(lines)), len(lines) - 1)
        lines[j], lines[k] = lines[k], lines[j]
        return "\n".join(lines)
    if kind == "duplicate_line":
        lines[j:j] = [lines[j]] * arg
        return "\n".join(lines)
    if kind == "delete_line":
        del lines[j]
        return "\n".join(lines)
    tokens = list(TOKEN.finditer(text))
    if not tokens:
        return text
    if kind == "number":
        numbers = [m for m in tokens if m.group()[0].isdigit()] or tokens
        m = numbers[min(int(where * len(numbers)), len(numbers) - 1)]
        return text[:m.start()] + str(arg) + text[m.end():]
    m = tokens[min(int(where * len(tokens)), len(tokens) - 1)]  # replace_token
    return text[:m.start()] + arg + text[m.end():]


def load_and_check(source):
    """The property: loads raises SpecError or returns a spec; check never raises."""
    try:
        spec = af.loads(source, "fuzz.flow")
    except SpecError as e:
        rendered = str(e)  # rendering must work too
        assert rendered.startswith("fuzz.flow")
        assert e.line is None or e.line >= 1
        return
    report = af.check(spec)
    assert report.valid == (not report.errors)
    for err in report.errors:
        assert err["message"] and err["text"]
    if report.valid:
        d = report.dims
        assert d.data + d.augmented == d.prior
        p = report.parameters
        assert p.total == p.flow + p.q + p.dequantizer + p.condition


FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.sampled_from(TEXTS), st.lists(edits, min_size=1, max_size=4))
def test_text_mutations_raise_only_spec_errors(text, mutations):
    for m in mutations:
        text = apply(text, m)
    load_and_check(text)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(TEXTS), st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=3)),
                                        min_size=1, max_size=3))
def test_random_bytes_raise_only_spec_errors(text, patches):
    data = text.encode("utf-8")
    for where, raw in patches:
        i = min(int(where * (len(data) + 1)), len(data))
        data = data[:i] + raw + data[i + len(raw):]
    load_and_check(data)


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_spec_errors(text):
    load_and_check(text)


def test_check_of_a_path_never_raises(tmp_path):
    """The path form of check turns every load problem into an invalid report."""
    for i, (text, edit) in enumerate([(BASE, ("delete", 0.5, 40)), (TEXTS[1], ("insert", 0.3, "((")),
                                      (BASE, ("replace_token", 0.9, "1e400"))]):
        path = tmp_path / f"m{i}.flow"
        path.write_text(apply(text, edit))
        report = af.check(str(path))
        assert not report.valid and report.errors[0]["file"] == str(path)
    report = af.check(str(tmp_path / "missing.flow"))
    assert not report.valid and "cannot read" in report.errors[0]["message"]
