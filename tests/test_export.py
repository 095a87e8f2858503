"""`augflow-dsl export` (ONNX): the exported log_prob and sampler against eager torch.

* onnxruntime against torch within 1e-4 on toy-glow3, toy-vflow3-10d, a tiny digits-small (all its
  parts, fewer of each) and a tiny mixture-coupling flow on continuous data, for log_prob and
  sample, each model's weights perturbed away from their initialisation (zero-initialised last
  layers make every coupling the identity at first): the command's own check and an independent
  one on other inputs, through the public API (``model.log_prob`` / ``model.sample`` with the
  same noise fed);
* each noise input is used: changing it alone changes the file's output (and torch's, equally);
* conditional models (a tiny digits-cond, a 2-D vector-conditioned flow): y is the second input
  (int64 labels [N] or float vectors [N, D]), onnxruntime equals torch given the same x, y and
  noise, and another y changes the output;
* the draw hook changes nothing for normal use, and replays recorded draws exactly; the fixed-count
  Newton inverse equals the adaptive one;
* the failures name the step and the op: a step that draws its own random numbers, an op with
  no ONNX translation; the check itself fails on a file of another model;
* the CLI: exit codes, ``--json``, the printed inputs, no traceback on bad input.
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import numpy as np  # noqa: E402

import augflow_dsl as af  # noqa: E402
from augflow_dsl.cli import main  # noqa: E402
from augflow_dsl.compiler.model_file import save_compiled  # noqa: E402
from augflow_dsl.layers.base import NoiseFeed, feeding  # noqa: E402
from augflow_dsl.tools.onnx_export import ExportError, export_onnx, load_source, verify_onnx  # noqa: E402
from conftest import SPECS_DIR, mutate  # noqa: E402

TOL = 1e-4
# continuous data, so that samples show the mixture inverse's float error (integer data rounds it)
MIXTURE = """
flow: tiny-mixture
data: {shape: [2, 2, 2]}
stages: [actnorm, mixture_coupling(components: 4, net: glow_net(filters: 4)), swap, actnorm]
prior: normal
"""
# digits-small with every part kept (variational dequantizer, cross-unit augmentation, squeeze-and-drop,
# learned prior) and fewer of each: one q step, shallower dense nets, 2 units, 2 modules in the last block
DIGITS_TINY = (SPECS_DIR / "digits-small.flow").read_text()
for _old, _new in [("flow: [2 * dq_step, unsqueeze, sigmoid]", "flow: [dq_step, unsqueeze, sigmoid]"),
                   ("context(filters: 16, depth: 2, growth: 8)", "context(filters: 8, depth: 1, growth: 4)"),
                   ("(mid: 16, depth: 2, growth: 16)", "(mid: 8, depth: 1, growth: 8)"),
                   ("modules: 4 * glow", "modules: 2 * glow")]:
    DIGITS_TINY = mutate(_old, _new, DIGITS_TINY)  # each occurs once (fails loudly if the spec changes)
# digits-cond (class-conditional digits-small) shrunk the same way, one unit; and a 2-D flow conditioned on a
# context vector: the y input of a conditional model (labels int64 [N], vectors float [N, D])
DIGITS_COND_TINY = (SPECS_DIR / "digits-cond.flow").read_text()
for _old, _new in [("flow: [2 * dq_step, unsqueeze, sigmoid]", "flow: [dq_step, unsqueeze, sigmoid]"),
                   ("context(filters: 16, depth: 2, growth: 8)", "context(filters: 8, depth: 1, growth: 4)"),
                   ("(mid: 16, depth: 2, growth: 16)", "(mid: 8, depth: 1, growth: 8)"),
                   ("modules: 4 * glow", "modules: 2 * glow")]:
    DIGITS_COND_TINY = mutate(_old, _new, DIGITS_COND_TINY)
VECTOR = """
flow: tiny-vector
data: {shape: [2]}
condition: {vector: 3, embed: 4}
stages: [actnorm, affine_coupling(net: mlp(hidden: 8), condition: true), reverse,
         affine_coupling(net: mlp(hidden: 8), condition: true)]
prior: class_normal
"""
CONDITIONAL = {"digits-cond": (DIGITS_COND_TINY, {"units": 1, "width": 8}), "vector": (VECTOR, {})}
MODELS = {  # name: (spec file or text, overrides)
    "glow": ("toy-glow3.flow", {}),
    "vflow": ("toy-vflow3-10d.flow", {}),
    "digits": (DIGITS_TINY, {"units": 2, "width": 8}),
    "mixture": (MIXTURE, {}),
}
# exported for exactly 3 examples (about twice as fast to export); glow's two files have a dynamic batch
STATIC = {"vflow", "digits", "mixture", "digits-cond"}


def _perturbed(name: str, scale: float = 0.05):
    spec, overrides = (MODELS | CONDITIONAL)[name]
    torch.manual_seed(1234)
    spec = af.loads(spec, overrides=overrides) if "\n" in spec else af.load(str(SPECS_DIR / spec), overrides)
    model = af.compile(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval(), overrides


class Exports:
    """Each (model, what) exported once per module, lazily: (model, path, result JSON)."""

    def __init__(self, tmp):
        self.tmp, self.done = tmp, {}

    def get(self, name: str, what: str):
        key = (name, what)
        if key not in self.done:
            model, overrides = _perturbed(name)
            pt, path = self.tmp / f"{name}.pt", self.tmp / f"{name}-{what}.onnx"
            save_compiled(pt, model, overrides)
            if name in ("glow", "vector"):  # through the CLI: --json for log_prob, the printed report for sample
                self.done[key] = (model, path, _cli_export(pt, path, what))
            else:  # through the API
                r = export_onnx(load_source(str(pt))[0], path, what, batch=3, dynamic=name not in STATIC)
                self.done[key] = (model, path, r.as_json())
        return self.done[key]


_CLI_TEXT: dict = {}


def _cli_export(pt, path, what: str) -> dict:
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    json_mode = what == "log_prob"
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", str(pt), "--onnx", str(path), "--what", what] + (["--json"] if json_mode else []))
    assert code == 0, err.getvalue()
    if json_mode:
        return json.loads(out.getvalue())
    _CLI_TEXT[what] = out.getvalue()
    # the same figures as the JSON would give, read back from the file's own check
    return {"text": out.getvalue()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("export"))


def _inputs(model, what: str, noise_shapes, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    if what == "log_prob":
        if model.bits:
            first = torch.randint(0, 2 ** model.bits, (n, *model.data_shape), generator=g).float()
        else:
            first = torch.randn(n, *model.data_shape, generator=g)
    else:
        first = torch.tensor(0.8)
    noise = [torch.rand(n, *s[1:], generator=g) if kind == "rand" else torch.randn(n, *s[1:], generator=g)
             for kind, s in noise_shapes]
    return first, noise


def _y(model, n: int, seed: int):
    """n conditions of a conditional model (labels, or context vectors), None for an unconditional one."""
    if not model.conditional:
        return None
    g = torch.Generator().manual_seed(seed)
    c = model.condition
    return torch.randint(0, c.classes, (n,), generator=g) if c.classes else torch.randn(n, c.vector, generator=g)


def _noise_of(model, what: str):
    """(kind, shape) of each draw of one eager pass, in order (the file's noise inputs)."""
    feed = NoiseFeed()
    with torch.no_grad(), feeding(feed):
        if what == "log_prob":
            model.log_prob(_inputs(model, what, [], 2, 0)[0], _y(model, 2, 0))
        else:
            model.sample(2, y=_y(model, 2, 0))
    return [(kind, tuple(t.shape)) for _, kind, t in feed.log]


def _torch(model, what, first, noise, y=None):
    with torch.no_grad(), feeding(NoiseFeed(noise)):
        if what == "log_prob":
            return model.log_prob(first, y).double().numpy()
        return model.sample(noise[0].shape[0], temperature=float(first), y=y).double().numpy()


def _ort(path, first, noise, y=None):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    values = [first, *([] if y is None else [y]), *noise]
    return sess.run(None, dict(zip(names, [v.numpy() for v in values])))[0].astype(np.float64)


def _diff(what, got, ref) -> float:
    d = np.abs(got - ref)
    return float((d / np.maximum(1.0, np.abs(ref))).max() if what == "log_prob" else d.max())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("what", ["log_prob", "sample"])
def test_onnxruntime_matches_torch(exports, name, what):
    model, path, result = exports.get(name, what)
    if "verify" in result:  # the command's own check (the CLI text run is checked in test_cli_text_report)
        v = result["verify"]
        assert v["ok"] and v["nonfinite_torch"] == 0 and v["tolerance"] == TOL
        assert v["max_rel_diff" if what == "log_prob" else "max_abs_diff"] <= TOL
    # an independent check: other inputs, another batch size where the batch is dynamic
    n = 3 if name in STATIC else 6
    first, noise = _inputs(model, what, _noise_of(model, what), n, seed=99)
    ref, got = _torch(model, what, first, noise), _ort(path, first, noise)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert _diff(what, got, ref) <= TOL, _diff(what, got, ref)
    if what == "sample" and model.bits:
        assert ((got >= 0) & (got <= 2 ** model.bits - 1) & (got == np.floor(got))).all()
    if what == "log_prob":
        assert np.ptp(ref) > 1e-3  # the examples' log-probabilities differ: not a constant graph


@pytest.mark.parametrize("name,what", [("vflow", "log_prob"), ("digits", "log_prob"), ("digits", "sample"),
                                       ("glow", "sample"), ("mixture", "sample")])
def test_every_noise_input_is_used(exports, name, what):
    """Changing one noise input alone changes the output of the file, and torch's by as much."""
    model, path, _ = exports.get(name, what)
    shapes = _noise_of(model, what)
    assert shapes, "no noise inputs"
    n = 3
    first, noise = _inputs(model, what, shapes, n, seed=5)
    base = _ort(path, first, noise)
    for j, (kind, _) in enumerate(shapes):
        other = list(noise)
        other[j] = torch.rand_like(noise[j]) if kind == "rand" else torch.randn_like(noise[j])
        got, ref = _ort(path, first, other), _torch(model, what, first, other)
        assert np.abs(got - base).max() > 1e-3, f"noise input {j} ({kind}) changes nothing"
        assert _diff(what, got, ref) <= TOL


def test_the_inputs_are_named_and_documented(exports):
    _, path, result = exports.get("digits", "log_prob")
    names = [i["name"] for i in result["inputs"]]
    assert names == [i.name for i in ort.InferenceSession(str(path)).get_inputs()]
    assert names[0] == "x" and result["inputs"][0]["shape"] == [3, 1, 8, 8]  # digits: exported at batch 3
    assert names[1].endswith("_variational") and "N(0, I)" in result["inputs"][1]["meaning"]
    assert any(n.endswith("_cross_unit") for n in names[2:])
    _, _, glow = exports.get("glow", "log_prob")
    assert [i["name"] for i in glow["inputs"]] == ["x"] and glow["inputs"][0]["shape"] == ["N", 2]
    assert glow["batch"] == "N (dynamic)" and glow["ok"] is True and glow["outputs"][0]["name"] == "log_prob"


def test_cli_text_report(exports):
    """The report names each input with its shape and gives the check's figure."""
    exports.get("glow", "sample")
    text = _CLI_TEXT["sample"]
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith("    ")}
    assert rows == {"temperature": "[]", "noise0_s9_normal": "[N,"}  # shapes: [] and [N, 2]
    assert "noise0_s9_normal  [N, 2]  N(0, I) (times temperature) drawn by step 9" in text
    line = next(s for s in text.splitlines() if "onnxruntime vs torch" in s)
    figure = float(line.split("max |ort - torch| = ")[1].split()[0])
    assert figure <= TOL and line.endswith("ok")


@pytest.mark.parametrize("name,what", [("digits-cond", "log_prob"), ("digits-cond", "sample"), ("vector", "log_prob")])
def test_conditional_export_matches_torch(exports, name, what):
    """A conditional model's file takes y after x (log_prob) or temperature (sample) and computes the
    condition's embedding from it: onnxruntime equals torch's ``log_prob(x, y)`` / ``sample(n, y=y)``
    given the same x, y and noise (the command's check, on the model's samples given its own y, and
    here on other inputs); other labels or vectors change the output, in both alike."""
    model, path, result = exports.get(name, what)
    assert [i["name"] for i in result["inputs"]][:2] == ["x" if what == "log_prob" else "temperature", "y"]
    v = result["verify"]
    assert v["ok"] and v["nonfinite_torch"] == 0 and v["inputs"].endswith(" y")
    assert v["max_rel_diff" if what == "log_prob" else "max_abs_diff"] <= TOL
    n = 3 if name in STATIC else 6
    first, noise = _inputs(model, what, _noise_of(model, what), n, seed=99)
    y = _y(model, n, seed=98)
    ref, got = _torch(model, what, first, noise, y), _ort(path, first, noise, y)
    assert got.shape == ref.shape and np.isfinite(got).all() and _diff(what, got, ref) <= TOL
    other = (y + 1) % model.condition.classes if model.condition.classes else -y
    ref2, got2 = _torch(model, what, first, noise, other), _ort(path, first, noise, other)
    assert np.abs(got2 - got).max() > 1e-3, "y changes nothing"
    assert _diff(what, got2, ref2) <= TOL


def test_conditional_y_input_dtype_and_shape(exports):
    """y is int64 [N] for a class-conditional model (static batch 3 here), float [N, D] for a
    vector-conditioned one (dynamic batch, exported through the CLI's --json)."""
    _, path, result = exports.get("digits-cond", "log_prob")
    y = ort.InferenceSession(str(path)).get_inputs()[1]
    assert (y.name, y.type, y.shape) == ("y", "tensor(int64)", [3])
    assert result["inputs"][1] == {"name": "y", "shape": [3], "dtype": "int64", "meaning": "class labels 0..9 (int64)"}
    _, path, result = exports.get("vector", "log_prob")
    y = ort.InferenceSession(str(path)).get_inputs()[1]
    assert (y.name, y.type, y.shape[1]) == ("y", "tensor(float)", 3) and isinstance(y.shape[0], str)
    assert result["ok"] and [i["name"] for i in result["inputs"]] == ["x", "y"]
    assert result["inputs"][1] == {"name": "y", "shape": ["N", 3], "dtype": "float32", "meaning": "context vectors [3]"}


def test_the_check_fails_on_another_models_file(exports):
    """The figure is a real comparison: the glow file checked against other weights fails."""
    _, path, _ = exports.get("glow", "log_prob")
    other, _ = _perturbed("glow", scale=0.2)
    v = verify_onnx(other, path, "log_prob", ["x"], [], batch=5, seed=3)
    assert not v["ok"] and v["max_rel_diff"] > 1e-3


def test_draw_hook_preserves_numerics_and_replays():
    model, _ = _perturbed("digits")
    x = torch.randint(0, 32, (4, 1, 8, 8)).float()
    torch.manual_seed(7)
    plain = model.log_prob(x)
    torch.manual_seed(7)
    with feeding(NoiseFeed()) as feed:
        recorded = model.log_prob(x)
    assert torch.equal(plain, recorded) and len(feed.log) == 2  # the q base and one cross-unit point
    with feeding(NoiseFeed([t for _, _, t in feed.log])):
        assert torch.equal(model.log_prob(x), plain)


def test_mixture_inverse_is_one_onnx_loop(exports):
    """The mixture coupling's Newton iteration is an ONNX Loop (one copy of the step, at most 32
    iterations), not an unrolled chain; the file's samples match torch's adaptive solver (also
    test_onnxruntime_matches_torch[sample-mixture]; continuous data: nothing rounds the error)."""
    import onnx
    _, path, result = exports.get("mixture", "sample")
    loops = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Loop"]
    assert len(loops) == 1 and result["newton_iterations"] == 32
    assert result["verify"]["max_abs_diff"] <= TOL and result["verify"]["ok"]


def test_fixed_iteration_newton_equals_the_adaptive_inverse():
    """The mixture coupling's export-mode inverse (fixed Newton count) samples exactly what the
    normal path samples, on a small Flow++ with perturbed weights (non-trivial mixtures)."""
    from augflow_dsl.layers.mixture import fixed_iterations
    model = af.compile(str(SPECS_DIR / "flowpp.flow"), overrides={
        "size": 4, "filters": 4, "blocks": 1, "components": 4, "dq_filters": 4, "dq_blocks": 1, "heads": 1})
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    eps = [torch.randn(3, *shape[1:]) for _, shape in _noise_of(model, "sample")]
    with torch.no_grad(), feeding(NoiseFeed(eps)):
        adaptive = model.sample(3, 0.9)
    with torch.no_grad(), feeding(NoiseFeed(eps)), fixed_iterations():
        fixed = model.sample(3, 0.9)
    assert torch.equal(adaptive, fixed)
    # each coupling's continuous inverse, bit for bit (the samples above are quantized to 8 bits)
    from augflow_dsl.layers.coupling import MixtureCoupling
    couplings = [m for m in model.steps if isinstance(m, MixtureCoupling)]
    assert couplings
    for layer in couplings:
        y = torch.randn(3, *layer_shape(model, layer)) * 3
        with torch.no_grad():
            x_adaptive, ld_adaptive = layer.inverse_and_logdet(y)
            with fixed_iterations():
                x_fixed, ld_fixed = layer.inverse_and_logdet(y)
        assert torch.equal(x_adaptive, x_fixed) and torch.equal(ld_adaptive, ld_fixed)


def layer_shape(model, layer) -> tuple[int, ...]:
    """The input shape of a plan step (recorded by a forward hook on one eager pass)."""
    shapes = {}
    handle = layer.register_forward_hook(lambda m, a, out: shapes.update(x=tuple(a[0].shape[1:])))
    with torch.no_grad():
        model.log_prob(torch.randint(0, 256, (1, *model.data_shape)).float())
    handle.remove()
    return shapes["x"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread,h_scale", [(2.0, 3.0), (10.0, 10.0), (2.0, 60.0), (0.01, 3.0)])
def test_fixed_iteration_newton_on_hard_mixtures(dtype, spread, h_scale):
    """The hard mixtures of test_mixture_inverse (log-scales down to -7, far tails): up to 22
    adaptive iterations; the fixed count (32) returns the same x bit for bit, and a count below
    what the adaptive solver used does not."""
    from test_mixture_inverse import _mixture

    from augflow_dsl.layers.mixture import EXPORT_ITERATIONS, newton_logit, newton_logit_fixed
    h, logw, means, log_scales = _mixture(32, spread, (-7.0, 2.0), h_scale, dtype, seed=int(spread * 10 + h_scale))
    if dtype == torch.float32:
        h = h.clamp(-80, 80)
    stats: dict = {}
    adaptive = newton_logit(h, logw, means, log_scales, stats)
    assert stats["iterations"] < EXPORT_ITERATIONS
    assert torch.equal(newton_logit_fixed(h, logw, means, log_scales), adaptive)
    assert not torch.equal(newton_logit_fixed(h, logw, means, log_scales, stats["iterations"] // 2), adaptive)


# ---------------------------------------------------------------------------- failures
NOISE_PAD_SPEC = """
flow: noisy
data: {shape: [2, 4, 4], bits: 3}
augment: test_noise_pad(channels: 2)
stages: [actnorm]
prior: normal
"""


@pytest.fixture
def noise_pad():
    """The extension example's noise pad, with a layer that calls torch.randn itself instead of the
    step's draw(): the one thing an exportable step must not do."""
    import torch
    from test_extension import NoisePad
    from test_extension import NoisePadLayer as Drawn

    from augflow_dsl.layers import implements, unregister
    from augflow_dsl.layers.priors import normal_log_prob
    from augflow_dsl.ops.registry import REGISTRY, register

    class NoisePadLayer(Drawn):
        def forward(self, x, context=None):
            e = torch.randn(x.shape[0], self.channels, *x.shape[2:], dtype=x.dtype, device=x.device)
            return torch.cat([x, e], 1), -normal_log_prob(e)

    register(NoisePad)
    unregister(NoisePad)
    implements(NoisePad)(NoisePadLayer)
    yield
    REGISTRY.pop(NoisePad.name)
    unregister(NoisePad)


def test_a_step_drawing_its_own_noise_is_refused(noise_pad, tmp_path, capsys):
    """A noise-pad layer that calls torch.randn itself: the message names the
    step, its op and the random op, and says how to fix it; the CLI exits 1 without a traceback."""
    spec = tmp_path / "noisy.flow"
    spec.write_text(NOISE_PAD_SPEC)
    with pytest.raises(ExportError) as e:
        export_onnx(af.compile(str(spec)), tmp_path / "x.onnx", "log_prob")
    msg = str(e.value)
    assert "step 1 (test_noise_pad, layer NoisePadLayer)" in msg and "aten.randn" in msg and "draw(" in msg
    assert main(["export", str(spec), "--onnx", str(tmp_path / "x.onnx"), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] in err and "Traceback" not in err


def test_an_op_without_onnx_translation_is_named(tmp_path):
    """Without folding the weights, the 1x1 convolutions' W^-1 stays in the graph: ONNX has no
    matrix inverse (an LU 1x1 inverts by two triangular solves, which ONNX lacks too); the message
    names the op and the steps that use it."""
    model, _ = _perturbed("glow")
    with pytest.raises(ExportError) as e:
        export_onnx(model, tmp_path / "x.onnx", "sample", dynamic=False, fold=False)
    msg = str(e.value)
    assert "aten.linalg_solve_triangular" in msg and "steps 1, 4, 7 (conv1x1, layer Conv1x1)" in msg
    assert "no ONNX translation" in msg


@pytest.mark.parametrize("args,code,phrase", [
    (["missing.flow"], 2, "no such model"),
    (["{bad}"], 1, "bad.flow:2"),
    (["{junk}"], 1, "neither a .flow spec nor a readable model file"),
    (["{pt}", "--set", "hidden=4"], 2, "--set applies to a .flow spec only"),
    (["specs/toy-glow3.flow", "--onnx", "/no/such/folder/x.onnx"], 2, "no such folder"),
])
def test_cli_bad_input(tmp_path, capsys, args, code, phrase):
    bad = tmp_path / "bad.flow"
    bad.write_text("flow: bad\nlet: {a: \n")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 not really a zip archive")
    pt = tmp_path / "glow.pt"
    if "{pt}" in args:
        save_compiled(pt, af.compile(str(SPECS_DIR / "toy-glow3.flow")))
    argv = [a.format(bad=bad, junk=junk, pt=pt) for a in args]
    if "--onnx" not in argv:
        argv += ["--onnx", str(tmp_path / "x.onnx")]
    assert main(["export", *argv, "--json"]) == code
    out, err = capsys.readouterr()
    assert phrase in err and "Traceback" not in err
    assert json.loads(out) == {"ok": False, "error": err.strip().removeprefix("error: "), "exit": code}


def test_cli_usage_errors_exit_2(capsys):
    for argv in (["export", "specs/toy-glow3.flow"], ["export", "specs/toy-glow3.flow", "--onnx", "x.onnx",
                                                      "--what", "encode"],
                 ["export", "specs/toy-glow3.flow", "--onnx", "x.onnx", "--batch", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_untraceable_control_flow_names_the_step(tmp_path):
    """A branch on a tensor's value (here patched into one coupling) cannot be traced: the message
    names the step and gives torch.export's reason."""
    import types
    model, _ = _perturbed("glow")
    layer = model.steps[2]
    plain = type(layer).forward

    def branching(self, x, cond=None):
        return plain(self, x * 1.0 if x.sum() > 0 else x, cond)

    layer.forward = types.MethodType(branching, layer)
    with pytest.raises(ExportError) as e:
        export_onnx(model, tmp_path / "x.onnx", "log_prob", dynamic=False)
    msg = str(e.value)
    assert "torch.export cannot trace step 2 (affine_coupling, module steps.2)" in msg and "data-dependent" in msg


LAYERED = """
flow: tiny-layered
data: {shape: [2, 4, 4]}
net g(f): [conv(3, f, init: data), actnorm, relu, residual([batchnorm, relu, conv(3, f)]), attention(2), gated_conv,
           layernorm, zero_conv(3, logscale: 3)]
stages: [actnorm, affine_coupling(net: g(4)), swap]
prior: normal
"""


def test_a_net_written_as_layers_exports(tmp_path):
    """A coupling whose net is written as layers (issue 22: a residual block, attention, a gated conv, the net's
    actnorm and data-initialised conv, initialised on a batch) exports; onnxruntime agrees with torch."""
    torch.manual_seed(7)
    model = af.compile(af.loads(LAYERED, "layered.flow"))
    model.initialize(torch.randn(8, 2, 4, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    r = export_onnx(model, tmp_path / "layered.onnx", "log_prob", batch=3, dynamic=False).as_json()
    assert r["verify"]["ok"] and r["verify"]["max_rel_diff"] <= TOL
    first, noise = _inputs(model, "log_prob", _noise_of(model, "log_prob"), 3, seed=11)
    ref, got = _torch(model, "log_prob", first, noise), _ort(tmp_path / "layered.onnx", first, noise)
    assert got.shape == ref.shape and _diff("log_prob", got, ref) <= TOL and np.ptp(ref) > 1e-3
