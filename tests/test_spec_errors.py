"""A corpus of malformed and impossible specs, each breaking one thing of a small valid spec.

Every case names the phrase its message must contain and the exact place it points at: the
line and column for errors found while reading the spec (SpecError), the node name as well for
errors found while building and checking the graph (an invalid CheckReport). No case may end in
anything but a SpecError or an invalid report: never a Python traceback.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

import augflow_dsl as af
from augflow_dsl.errors import SpecError, printable
from augflow_dsl.language.parse import MAX_BYTES, MAX_NESTING

from conftest import BASE, mutate

FILE = "t.flow"
BLOCK1 = "  - block: {units: units, modules: 2 * glow, augment: cross_unit(growth: growth)}\n"
BLOCK2 = "  - block: {units: 1, modules: [glow]}\n"
Q_POST = "q post:\n  flow: [sigmoid]\n"


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes
    phrase: str
    line: int
    column: int
    node: str | None = None     # set: the error is found by `check` at this graph node
    stage: str = "load"         # "load": loads() raises; "check": loads() works, check() reports it
    overrides: dict | None = None


def load_case(id, text, phrase, line, column, overrides=None):
    return Case(id, text, phrase, line, column, None, "load", overrides)


def check_case(id, text, phrase, line, column, node):
    return Case(id, text, phrase, line, column, node, "check")


CASES = [
    # ------------------------------------------------------------------ syntax
    load_case("missing-colon", mutate("prior: learned_normal", "prior learned_normal"),
              "unexpected end of the line; expected '(', ':'", 10, 21),
    load_case("missing-colon-in-argument", mutate("conv1x1(param: lu)", "conv1x1(param lu)"),
              "unexpected 'lu'", 4, 38),
    load_case("unclosed-bracket", mutate("modules: [glow]}", "modules: [glow}"),
              "unexpected '}'; expected ',', ']'", 9, 37),
    load_case("unclosed-paren-at-eof", BASE + "train: {lr: (1e-3\n",
              "unexpected end of the file; expected ')'", 11, 18),
    load_case("dedent-mismatch", mutate("  - squeeze_and_drop", " - squeeze_and_drop"),
              "this line's indentation matches no enclosing block", 8, 2),
    load_case("unexpected-indent", mutate("data:", "   data:"),
              "unexpected indentation", 3, 4),
    load_case("indented-definition", mutate("module glow", "  module glow"),
              "unexpected indentation", 4, 3),
    load_case("tab-indent", mutate("  - squeeze\n", "\t- squeeze\n"),
              "tab character: indent with spaces", 6, 1),
    load_case("stray-character", mutate("growth: 2,", "growth: 2 $,"),
              "unexpected character '$'", 2, 28),
    load_case("stray-character-at-end", mutate("prior: learned_normal", "prior: learned_normal @"),
              "unexpected character '@'", 10, 23),
    load_case("control-character", mutate("tiny", "ti\x01ny"),
              "control character U+0001", 1, 9),
    load_case("non-utf8-bytes", mutate("learned_normal", "learned\xff_normal").encode("latin-1"),
              "byte 0xff is not valid UTF-8 text", 10, 15),
    load_case("unterminated-string", mutate("flow: tiny", 'flow: "tiny'),
              "unterminated string", 1, 7),
    load_case("empty-file", "", "the spec is empty", 1, 1),
    load_case("only-comments", "# nothing here\n\n# still nothing\n", "the spec is empty", 1, 1),
    load_case("positional-after-keyword",
              mutate("affine_coupling(net: glow_net(filters: width))",
                     "affine_coupling(net: glow_net(filters: width), channels)"),
              "in 'affine_coupling(...)': a positional argument follows a keyword argument", 4, 91),
    load_case("definition-inside-mapping", BASE + "train:\n  module foo: [actnorm]\n",
              "a definition ('module foo') is allowed only at the top level", 12, 3),
    load_case("list-item-sugar-without-mapping", mutate("  - squeeze_and_drop\n", "  - squeeze_and_drop: 3\n"),
              "'- squeeze_and_drop: ...' needs a mapping of arguments after the ':'", 8, 5),
    # ------------------------------------------------------------------ names
    load_case("unknown-op", mutate("conv1x1(param: lu)", "conv1x2(param: lu)"),
              "unknown op 'conv1x2' (did you mean 'conv1x1'?)", 4, 24),
    load_case("unknown-bare-op", mutate("[actnorm,", "[actnrom,"),
              "unknown op 'actnrom' in module 'glow' (did you mean 'actnorm'?)", 4, 15),
    load_case("unknown-op-as-prior", mutate("prior: learned_normal", "prior: learned_nromal"),
              "unknown op 'learned_nromal' in prior (did you mean 'learned_normal'?)", 10, 8),
    load_case("unknown-argument", mutate("conv1x1(param: lu)", "conv1x1(parm: lu)"),
              "'conv1x1' has no argument 'parm' (did you mean 'param'?)", 4, 32),
    load_case("wrong-enum-value", mutate("conv1x1(param: lu)", "conv1x1(param: lue)"),
              "'conv1x1': argument 'param' cannot be 'lue' (did you mean 'lu'?); expected 'lu' or 'full'", 4, 39),
    load_case("unknown-net-name", mutate("glow_net(filters: width)", "glownet"),
              "'glownet' is not a defined name (did you mean 'glow_net'?)", 4, 65),
    load_case("unknown-top-level-key", mutate("stages:", "stagse:"),
              "unknown key 'stagse' (did you mean 'stages'?)", 5, 1),
    load_case("unknown-train-setting", BASE + "train: {lr: 1e-3, epoch: 3}\n",
              "'train' has no setting 'epoch' (did you mean 'epochs'?)", 11, 19),
    load_case("unknown-data-setting", mutate("bits: 5}", "bits: 5, datset: digits}"),
              "'data' has no setting 'datset' (did you mean 'dataset'?)", 3, 35),
    load_case("unknown-definition-kind", mutate("module glow:", "modul glow:"),
              "unknown kind of definition 'modul' (did you mean 'module'?)", 4, 1),
    load_case("duplicate-definition", mutate("stages:", "module glow: [actnorm]\nstages:"),
              "duplicate definition 'glow' (first defined at line 4)", 5, 1),
    load_case("duplicate-key", BASE + "prior: normal\n", "duplicate key 'prior' (first at line 10)", 11, 1),
    load_case("duplicate-variable", mutate("units: 2}", "units: 2, width: 3}"),
              "variable 'width' is defined twice", 2, 39),
    load_case("duplicate-argument", mutate("conv1x1(param: lu)", "conv1x1(param: lu, param: full)"),
              "argument 'param' of 'conv1x1' is given twice", 4, 43),
    load_case("definition-named-like-an-op",
              mutate("module glow:", "module swap:").replace("2 * glow", "2 * swap").replace("[glow]", "[swap]"),
              "definition 'swap' has the name of a built-in op", 4, 1),
    load_case("too-many-module-arguments",
              mutate("module glow:", "module glow(w):").replace("filters: width", "filters: w")
              .replace("2 * glow", "2 * glow(1, 2)").replace("[glow]", "[glow(16)]"),
              "module 'glow' takes 1 argument(s) (w); got 2", 7, 40),
    load_case("missing-module-argument",
              mutate("module glow:", "module glow(w):").replace("filters: width", "filters: w")
              .replace("2 * glow", "2 * glow()").replace("[glow]", "[glow(16)]"),
              "module 'glow' is missing argument(s): w", 7, 40),
    load_case("parameterized-module-used-bare",
              mutate("module glow:", "module glow(w):").replace("filters: width", "filters: w")
              .replace("[glow]", "[glow(16)]"),
              "module 'glow' takes 1 argument(s) (w); call it as glow(...)", 7, 40),
    load_case("unknown-module-parameter",
              mutate("module glow:", "module glow(w):").replace("filters: width", "filters: w")
              .replace("2 * glow", "2 * glow(x: 8)").replace("[glow]", "[glow(16)]"),
              "module 'glow' has no parameter 'x'", 7, 45),
    load_case("module-refers-to-itself", mutate("swap]", "swap, glow]"),
              "module 'glow' refers to itself", 4, 98),
    load_case("mutual-recursion",
              mutate("stages:\n", "module a1: [b1]\nmodule b1: [a1]\nstages:\n  - a1\n"),
              "module 'a1' refers to itself", 6, 13),
    load_case("calling-a-variable", mutate("2 * glow", "2 * width(3)"),
              "'width' is a variable, not something that can be called", 7, 40),
    load_case("misspelt-variable-in-arithmetic", mutate("units: 2}", "units: 2 * wdith}"),
              "cannot apply '*' to the name 'wdith' (did you mean 'width'?)", 2, 36),
    load_case("override-of-undefined-variable", BASE,
              "override of 'widht': the spec defines no variable 'widht' (did you mean 'width'?)", 2, 1,
              overrides={"widht": 8}),
    # ------------------------------------------------------------------ values
    load_case("fractional-growth", mutate("growth: 2,", "growth: 2.5,"),
              "'cross_unit': argument 'growth': Input should be a valid integer, got a number with a fractional "
              "part (got 2.5)", 7, 66),
    load_case("negative-growth", mutate("growth: 2,", "growth: -2,"),
              "'cross_unit': argument 'growth': Input should be greater than 0 (got -2)", 7, 66),
    load_case("zero-growth", mutate("growth: 2,", "growth: 0,"),
              "'cross_unit': argument 'growth': Input should be greater than 0 (got 0)", 7, 66),
    load_case("negative-filters", mutate("glow_net(filters: width)", "glow_net(filters: -16)"),
              "'glow_net': argument 'filters': Input should be greater than 0 (got -16)", 4, 74),
    load_case("zero-units", mutate("units: 1,", "units: 0,"),
              "'block': argument 'units': Input should be greater than 0 (got 0)", 9, 13),
    load_case("boolean-units", mutate("units: 1,", "units: true,"),
              "'block': argument 'units' takes a whole number, not the boolean true", 9, 13),
    load_case("string-growth", mutate("growth: 2,", 'growth: "two",'),
              "unable to parse string as an integer (got 'two')", 7, 66),
    load_case("fractional-repetition", mutate("2 * glow", "2.5 * glow"),
              "repetition needs a whole number; got a number 2.5", 7, 36),
    load_case("string-repetition", mutate("2 * glow", '"2" * glow'),
              "repetition needs a whole number; got a string '2'", 7, 36),
    load_case("repetition-by-a-string-override", mutate("2 * glow", "units * glow"),
              "repetition needs a whole number; got a string '2'", 7, 36, overrides={"units": "2"}),
    load_case("ops-repeated-by-ops", mutate("2 * glow", "glow * glow"),
              "repetition needs a whole number; got a list of 4 ops", 7, 36),
    load_case("zero-repetition", mutate("2 * glow", "0 * glow"),
              "repetition count must be at least 1; got 0", 7, 36),
    load_case("division-by-zero-in-let", mutate("units: 2}", "units: 2 / 0}"), "division by zero", 2, 36),
    load_case("floor-division-by-zero-in-let", mutate("units: 2}", "units: 4 // (2 - 2)}"),
              "division by zero", 2, 36),
    load_case("adding-to-a-module", mutate("2 * glow", "glow + 1"),
              "cannot apply '+' to a list of 4 ops", 7, 36),
    load_case("number-too-large", BASE + "train: {lr: 1e400}\n", "number too large: 1e400", 11, 13),
    load_case("huge-repetition", mutate("2 * glow", "1000000000 * glow"),
              "the spec expands to more than 10,000 ops", 7, 36),
    load_case("huge-repetition-by-product", mutate("2 * glow", "1000 * 1000 * 1000 * glow"),
              "the spec expands to more than 10,000 ops", 7, 36),
    load_case("deep-bracket-nesting", BASE + "train: {lr: " + "(" * 1000 + "1" + ")" * 1000 + "}\n",
              f"brackets nested deeper than {MAX_NESTING} levels", 11, 8 + MAX_NESTING + 4),
    load_case("deep-list-nesting", BASE + "train: {augment: " + "[" * 60 + "1" + "]" * 60 + "}\n",
              "expression nested too deeply", 11, 69),
    load_case("deep-unary-minus", BASE + "train: {lr: " + "-" * 5000 + "1}\n",
              "expression nested too deeply", 11, 64),
    load_case("long-sum-chain", BASE + "train: {lr: 1" + " + 1" * 3000 + "}\n",
              "expression nested too deeply", 11, 13),
    load_case("two-megabyte-file", BASE + ("# " + "x" * 98 + "\n") * 21_000,
              f"the spec is 2,121,364 bytes; a spec may be at most {MAX_BYTES:,}", 1, 1),
    load_case("two-megabyte-file-as-bytes", (BASE + ("# " + "x" * 98 + "\n") * 21_000).encode(),
              f"the spec is 2,121,364 bytes; a spec may be at most {MAX_BYTES:,}", 1, 1),
    # ------------------------------------------------------------------ structure
    load_case("missing-stages", BASE.split("stages:")[0] + "prior: normal\n",
              "the spec has no 'stages:' entry", 1, 1),
    load_case("missing-data", mutate("data: {shape: [4, 8, 8], bits: 5}\n", ""),
              "the spec has no 'data:' entry", 1, 1),
    load_case("empty-stages", BASE.split("stages:")[0] + "stages: []\n",
              "'stages' is empty: a flow needs at least one layer", 5, 1),
    load_case("let-not-a-mapping", mutate("let: {width: 16, growth: 2, units: 2}", "let: 3"),
              "'let' must be a mapping of names to values", 2, 6),
    load_case("data-shape-2d", mutate("[4, 8, 8]", "[8, 8]"),
              "'data': 'shape': shape must be [C, H, W] or [D]; got [8, 8]", 3, 8),
    load_case("data-bits-zero", mutate("bits: 5", "bits: 0"),
              "'data': 'bits': Input should be greater than or equal to 1 (got 0)", 3, 26),
    load_case("flow-name-not-a-name", mutate("flow: tiny", "flow: [tiny]"), "'flow' must be a name", 1, 7),
    load_case("module-where-a-net-goes",
              mutate("stages:", "module m2: [actnorm]\nstages:").replace("glow_net(filters: width)", "m2"),
              "'affine_coupling': argument 'net' needs one op; got a list of 1 op", 4, 60),
    load_case("op-where-a-q-network-goes", mutate("stages:", "augment: input(channels: 1, q: sigmoid)\nstages:"),
              "'input': argument 'q' needs a q-network (defined with 'q NAME: ...'); got the op 'sigmoid'", 5, 29),
    load_case("q-network-as-flow-layer", mutate("stages:\n", Q_POST + "stages:\n  - post\n"),
              "q 'post' is a q-network; use it inside variational(q: ...) or input(q: ...)", 8, 3),
    load_case("q-unknown-setting",
              mutate("stages:", "q post:\n  flw: [sigmoid]\naugment: input(channels: 2, q: post)\nstages:"),
              "q 'post' has no setting 'flw' (did you mean 'flow'?)", 6, 3),
    load_case("q-without-flow",
              mutate("stages:", "q post:\n  context: data_context\naugment: input(channels: 2, q: post)\nstages:"),
              "q 'post' needs a 'flow: [...]' list", 5, 1),
    load_case("variational-without-q", mutate("stages:", "dequantize: variational(then: [shift])\nstages:"),
              "'variational' needs the argument 'q'", 5, 13),
    # nets written as layers (issue 22): located at the layer
    load_case("unknown-net-layer", mutate("glow_net(filters: width)", "[conv(3, width), rleu, zero_conv]"),
              "unknown net layer 'rleu' (did you mean 'relu'?)", 4, 82),
    # ------------------------------------------------------------------ shapes and roles (found by check)
    check_case("net-layers-last-width", mutate("glow_net(filters: width)", "[conv(3, width), relu, zero_conv(out: 3)]"),
               "the net's last layer 'zero_conv' (line 4) gives 3 channels, but the coupling needs 16", 4, 88,
               "block 1, unit 1, module 3: affine_coupling"),
    check_case("odd-squeeze", mutate("[4, 8, 8]", "[4, 6, 6]"),
               "squeeze by 2: height 3 is not divisible by 2", 8, 5, "stage 3: squeeze_and_drop"),
    check_case("odd-squeeze-first-stage", mutate("[4, 8, 8]", "[4, 7, 8]"),
               "squeeze by 2: height 7 is not divisible by 2", 6, 5, "stage 1: squeeze"),
    check_case("odd-squeeze-inside-block", mutate("modules: [glow]", "modules: [squeeze, squeeze]"),
               "squeeze by 2: height 1 is not divisible by 2", 9, 42, "block 2, unit 1, module 2: squeeze"),
    check_case("channel-split-of-one-channel",
               mutate("  - squeeze\n", "  - affine_coupling(net: glow_net(filters: 8))\n  - squeeze\n")
               .replace("[4, 8, 8]", "[1, 8, 8]"),
               "a channel split needs at least 2 channels; got 1", 6, 5, "stage 1: affine_coupling"),
    check_case("odd-width-column-split",
               mutate("  - squeeze\n", "  - affine_coupling(split: columns, net: glow_net(filters: 8))\n"
                      "  - squeeze\n").replace("[4, 8, 8]", "[4, 8, 7]"),
               "a column split needs an even width; width 7 is odd", 6, 5, "stage 1: affine_coupling"),
    check_case("odd-channels-for-factor-out",
               mutate("  - squeeze_and_drop\n", "  - factor_out\n" * 5),
               "dropping half the channels needs an even channel count; got 9", 9, 5, "stage 4: factor_out"),
    check_case("odd-channels-for-mixture-coupling",
               mutate("  - squeeze\n", "  - mixture_coupling(net: conv_attention(filters: 8, blocks: 1))\n"
                      "  - squeeze\n").replace("[4, 8, 8]", "[3, 8, 8]"),
               "a channel split into equal halves needs an even channel count; got 3", 6, 5,
               "stage 1: mixture_coupling"),
    check_case("attention-heads-do-not-divide-filters",
               mutate("  - squeeze\n", "  - mixture_coupling(net: conv_attention(filters: 6, blocks: 1, heads: 4))\n"
                      "  - squeeze\n"),
               "filters 6 are not divisible by heads 4", 6, 5, "stage 1: mixture_coupling"),
    check_case("landmarks-do-not-divide-positions",
               mutate("glow_net(filters: width)", "dense_attention(project: 8, landmarks: 3)"),
               "4x4 = 16 positions are not divisible by 3 landmarks", 4, 44,
               "block 1, unit 1, module 3: affine_coupling"),
    check_case("mlp-on-images", mutate("glow_net(filters: width)", "mlp(hidden: 8)"),
               "mlp needs vector data", 4, 44, "block 1, unit 1, module 3: affine_coupling"),
    check_case("net-where-the-prior-goes", mutate("prior: learned_normal", "prior: glow_net(filters: 8)"),
               "'glow_net' is a coupling net, but a prior is needed here", 10, 8, "prior"),
    check_case("flow-layer-as-coupling-net", mutate("glow_net(filters: width)", "sigmoid"),
               "'sigmoid' is a flow layer, not a conditioner net", 4, 65,
               "block 1, unit 1, module 3: affine_coupling / net: sigmoid"),
    check_case("prior-as-coupling-net", mutate("glow_net(filters: width)", "learned_normal"),
               "'learned_normal' is a prior, not a conditioner net", 4, 65,
               "block 1, unit 1, module 3: affine_coupling / net: learned_normal"),
    check_case("net-op-as-flow-layer", mutate("  - squeeze\n", "  - glow_net(filters: 8)\n  - squeeze\n"),
               "'glow_net' is a coupling net, but a flow layer or a drop (factor-out) is needed here", 6, 5,
               "stage 1: glow_net"),
    check_case("cross-unit-outside-a-block", mutate("  - squeeze\n", "  - squeeze\n  - cross_unit(growth: 2)\n"),
               "'cross_unit' is an augment point, but a flow layer or a drop (factor-out) is needed here", 7, 5,
               "stage 2: cross_unit"),
    check_case("cross-unit-as-input-augment", mutate("stages:", "augment: cross_unit(growth: 2)\nstages:"),
               "cross_unit belongs in a block", 5, 10, "augment"),
    check_case("block-augment-not-cross-unit", mutate("augment: cross_unit(growth: growth)", "augment: sigmoid"),
               "a block's augment must be cross_unit(...); got 'sigmoid'", 7, 55, "block 1, unit 1"),
    check_case("block-inside-a-block", mutate("modules: [glow]", "modules: [block(units: 1, modules: [glow])]"),
               "'block' is a block, but a flow layer or a drop (factor-out) is needed here", 9, 33,
               "block 2, unit 1, module 1: block"),
    check_case("dequantize-without-bits",
               mutate("data: {shape: [4, 8, 8], bits: 5}", "data: {shape: [4, 8, 8]}\ndequantize: uniform"),
               "dequantization needs integer data: give data a 'bits' setting", 4, 13, "dequantize"),
    check_case("drop-after-dequantization", mutate("stages:", "dequantize: uniform(then: factor_out)\nstages:"),
               "'factor_out' is a drop (factor-out), but a flow layer is needed here", 5, 27,
               "dequantize, then 1: factor_out"),
    load_case("logit-alpha-out-of-range", mutate("stages:", "dequantize: uniform(then: logit(0.7))\nstages:"),
              "'logit': argument 'alpha': Input should be less than 0.5 (got 0.7)", 5, 33),
    check_case("q-base-is-a-net",
               mutate("stages:", "q p1:\n  flow: [sigmoid]\n  base: glow_net(filters: 2)\n"
                      "augment: input(channels: 1, q: p1)\nstages:"),
               "'glow_net' is a coupling net, but a prior is needed here", 7, 9, "q p1 base"),
    check_case("q-context-is-a-flow-layer",
               mutate("stages:", "q p1:\n  flow: [sigmoid]\n  context: swap\naugment: input(channels: 1, q: p1)\n"
                      "stages:"),
               "'swap' is a flow layer, but a context net is needed here", 7, 12, "q p1 context"),
    check_case("a-million-units", mutate("units: 1,", "units: 1000000,"),
               "1,000,000 units of 4 op(s) each expand to 4,000,000 ops", 9, 5, "block 2"),
]

UNREAD = {"two-megabyte-file"}
_IDS = [c.id for c in CASES]
assert len(_IDS) == len(set(_IDS)), "case ids must be unique"


def outcome(case: Case):
    """(message, line, column, node, rendered text) of the first error the case produces."""
    if case.stage == "load":
        with pytest.raises(SpecError) as info:
            af.loads(case.text, FILE, overrides=case.overrides)
        e = info.value
        assert type(e) is SpecError
        return e.message, e.line, e.column, e.node, str(e)
    spec = af.loads(case.text, FILE)  # must load: the problem is one only the graph shows
    report = af.check(spec)
    assert not report.valid, "check accepted a spec it must refuse"
    e = report.errors[0]
    return e["message"], e["line"], e["column"], e["node"], e["text"]


def test_corpus_is_large_enough():
    assert len(CASES) >= 45
    assert sum(c.stage == "check" for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_malformed_spec(case: Case):
    message, line, column, node, text = outcome(case)
    assert case.phrase in message
    assert (line, column) == (case.line, case.column), f"points at {line}:{column}: {message}"
    assert node == case.node
    # the rendering: file:line:col, the kind, the node, the message
    head = f"{FILE}:{case.line}:{case.column}: error: " + (f"{case.node}: " if case.node else "")
    assert text.startswith(head + message)
    # ... then the offending line and a caret under the column (when the text is decodable and
    # was read: an oversized file is refused before it is read, so it has no source line to show)
    if isinstance(case.text, str) and case.id not in UNREAD:
        source_line = case.text.lstrip("\ufeff").split("\n")[case.line - 1] if case.text else ""
        if source_line:
            rendered = text.split("\n")  # control characters escaped (issue 24), the caret under the escaped text
            assert rendered[1] == "  " + printable(source_line)
            assert rendered[2] == "  " + " " * len(printable(source_line[: case.column - 1])) + "^"


FILE_CASES = [c for c in CASES if c.stage == "load" and not c.overrides]  # overrides are not in the file


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_check_never_raises_on_a_malformed_spec(case: Case, tmp_path):
    """`check` given the path of a bad spec returns an invalid report with the same error."""
    path = tmp_path / FILE
    path.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode("utf-8"))
    report = af.check(str(path))
    assert not report.valid
    (err,) = report.errors
    assert case.phrase in err["message"]
    assert (err["line"], err["column"]) == (case.line, case.column)
    assert err["file"] == str(path)


def test_unused_definition_is_a_warning_not_an_error():
    spec = af.loads(mutate("stages:", "module extra: [actnorm]\nstages:"), FILE)
    (w,) = spec.warnings
    assert w.kind == "warning"
    assert "module 'extra' is defined but never used" in w.message
    assert (w.line, w.column) == (5, 1)
    assert str(w).startswith(f"{FILE}:5:1: warning: module 'extra' is defined but never used")
    report = af.check(spec)
    assert report.valid
    assert [x["message"] for x in report.warnings] == ["module 'extra' is defined but never used"]


def test_the_base_spec_is_valid():
    report = af.check(af.loads(BASE, FILE))
    assert report.valid, report.errors
    assert report.warnings == []
    assert (report.dims.data, report.dims.augmented, report.dims.prior) == (256, 32, 288)


@pytest.mark.parametrize("variant", [
    pytest.param(BASE.replace("\n", "\r\n"), id="crlf-line-endings"),
    pytest.param("\ufeff" + BASE, id="byte-order-mark"),
    pytest.param("# " + "(" * 70 + " brackets in a comment do not nest\n" + BASE, id="brackets-in-comment"),
    pytest.param("# (\n" * 70 + BASE, id="unbalanced-brackets-in-comments"),
    pytest.param(mutate("bits: 5", 'bits: 5, dataset: npz, path: "d/((( [[[ {{{.npz"'), id="brackets-in-string"),
    pytest.param(mutate("flow: tiny", "flow: tiny   # a comment \u2028 with a line separator"),
                 id="unicode-line-separator-in-comment"),
    pytest.param(BASE + "train: {lr: " + "(" * 40 + "1e-3" + ")" * 40 + "}\n", id="forty-parentheses"),
])
def test_harmless_variants_stay_valid(variant):
    report = af.check(af.loads(variant, FILE))
    assert report.valid, report.errors


def test_location_after_a_unicode_line_separator():
    """Lines are counted at '\\n' only, so the caret line matches the reported line."""
    text = mutate("flow: tiny", "flow: tiny  # \u2028 \u2029 \x85").replace("[actnorm,", "[actnrom,")
    with pytest.raises(SpecError) as info:
        af.loads(text, FILE)
    e = info.value
    assert (e.line, e.column) == (4, 15)
    assert str(e).split("\n")[1].startswith("  module glow: [actnrom,")


# ---------------------------------------------------------------------- errors say what would fix them
COLUMN_CONTEXT_Q = ("q post:\n  context: gated_context(filters: 4, blocks: 0, input: raw)\n"
                    "  flow: [affine_coupling(net: glow_net(filters: 4)), sigmoid]\n"
                    "augment: input(channels: 2, q: post)\nstages:")
FIXES = [  # the shape errors' fixes (split, squeeze, drop, a q's context) are the audit's (ops/*.py)
    pytest.param(mutate("glow_net(filters: width)", "glow_net()"),
                 "'glow_net' needs the argument 'filters' (width of the hidden convolutions): write "
                 "glow_net(filters: ...); `augflow-dsl ops glow_net` lists its arguments", id="missing-required-argument"),
    pytest.param(mutate("stages:", "dequantize: variational(then: [shift])\nstages:"),
                 "'variational' needs the argument 'q' (the q-network r(u | x), defined with 'q NAME: ...'",
                 id="missing-q-network"),
    pytest.param(mutate("[actnorm,", "[frobnicate,"),
                 "unknown op 'frobnicate' in module 'glow' (`augflow-dsl ops` lists every op)", id="unknown-op-no-match"),
    pytest.param(mutate("conv1x1(param: lu)", "conv2x2(param: lu)"),
                 "unknown op 'conv2x2' (did you mean 'conv1x1'?)", id="unknown-op-close-match"),
    pytest.param(mutate("conv1x1(param: lu)", "conv1x1(parm: lu)"),
                 "its arguments are: param, split, init, noise, bias (`augflow-dsl ops conv1x1` describes them)",
                 id="unknown-argument"),
]


@pytest.mark.parametrize("text, fix", FIXES)
def test_errors_say_what_would_fix_them(text, fix):
    try:
        spec = af.loads(text, FILE)
    except SpecError as e:
        messages = [str(e)]
    else:
        report = af.check(spec)
        assert not report.valid
        messages = [x["text"] for x in report.errors]
    assert any(fix in m for m in messages), messages


def test_independent_errors_in_one_spec_are_all_raised():
    """Unknown ops in two stages and a bad value in a definition: one SpecErrors, in source order; a mistake
    in a definition used twice is reported once, and what is built from a failed value adds no message."""
    from augflow_dsl.errors import SpecErrors
    text = (mutate("conv1x1(param: lu)", "conv1x1(param: lue)")
            .replace("  - squeeze\n", "  - squeez\n").replace("  - squeeze_and_drop\n", "  - squeeze_and_dorp\n"))
    with pytest.raises(SpecErrors) as info:
        af.loads(text, FILE)
    got = [(e.line, e.column, e.message.split(" (")[0].split(";")[0]) for e in info.value.errors]
    assert got == [(4, 39, "'conv1x1': argument 'param' cannot be 'lue'"),
                   (6, 5, "unknown op 'squeez' in stages"),
                   (8, 5, "unknown op 'squeeze_and_dorp' in stages")]
    assert (info.value.line, info.value.column) == (4, 39)  # reads as its first error
    assert str(info.value).count(f"{FILE}:") == 3


def test_a_limit_stops_at_once():
    """The expansion limit is not repeated at every later use: one message."""
    with pytest.raises(SpecError) as info:
        af.loads(mutate("2 * glow", "1000000000 * glow").replace("modules: [glow]", "modules: 1000000000 * glow"),
                 FILE)
    assert type(info.value) is SpecError and "expands to more than" in info.value.message


def test_split_overrides_reads_set_items_as_train_does():
    from augflow_dsl.language.evaluate import split_overrides
    assert split_overrides(["growth=6", "train.lr=3e-4", "train.augment=flip, translate", "train.ema=none"]) == (
        {"growth": 6}, {"lr": 3e-4, "augment": ["flip", "translate"], "ema": None})
    assert split_overrides({"growth": 6, "train.lr": 0.1}) == ({"growth": 6}, {"lr": 0.1})
    assert split_overrides(None) == ({}, {})
    for bad in ("train.lr", "train.=3", "growth"):
        with pytest.raises(SpecError, match="train.KEY=VALUE|name=value|not a name"):
            split_overrides([bad])
