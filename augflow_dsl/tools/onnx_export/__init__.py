"""ONNX export of a compiled flow's log-likelihood or of its sampler (issue 13, part 6), checked with
onnxruntime: :mod:`.sources` (where the model comes from), :mod:`.noise` (its noise as inputs),
:mod:`.trace` (torch.export and the ONNX translation), :mod:`.verify` (onnxruntime against torch),
:mod:`.diagnosis` (which step and op a failure comes from). The command (``augflow-dsl export
MODEL_OR_SPEC --onnx FILE [--what log_prob|sample]``) is in :mod:`augflow_dsl.cli.export`.

An ONNX graph cannot draw the same random numbers as torch, so each exported function is
deterministic, its noise an explicit input (docs/export.md):

* ``log_prob(x, noise...) -> log_prob [N]``: the forward plan (:meth:`FlowModel._forward_plan`,
  the one-sample ELBO when the model dequantizes or augments); one input per draw of a step
  that adds dims -- a uniform dequantizer's u ~ U[0, 1), a q-network base's epsilon ~ N(0, I)
  (variational dequantization, input augmentation), a cross-unit coupling's epsilon ~ N(0, I);
* ``sample(temperature, noise...) -> x [N, *data shape]``: the inverse plan
  (:meth:`FlowModel._inverse_plan`), fed with the prior's and each drop's standard-normal
  epsilon (scaled by ``temperature`` as ``model.sample`` does).

A conditional model (``condition:``) takes its y as the second input, after x or temperature:
int64 labels [N] or float context vectors [N, D]; the pass runs in ``model._given``, so the
condition's embedding is computed in the graph (docs/export.md, "Conditional models").

How: every draw of a step goes through :func:`~augflow_dsl.layers.base.draw`, so a
:class:`~augflow_dsl.layers.base.NoiseFeed` hands the steps the graph's inputs (one recorded
eager pass names them); values computed from the weights alone (the 1x1 convolutions' W^-1 and
log|det W|: ONNX has neither a matrix inverse nor a log-determinant) are folded into
initializers (:func:`frozen_weights`); the mixture coupling's Newton inverse becomes one
``torch.while_loop`` -- an ONNX Loop -- of at most 32 iterations
(:func:`~augflow_dsl.layers.mixture.newton_logit_fixed`); log_sigmoid gets a translation that
keeps its float32 tails (:func:`stable_translations`). A step that draws random numbers itself,
an op with no ONNX translation, or code torch.export cannot trace is refused with a message
naming the step, its op and the reason. The exporter is ``torch.onnx.export(..., dynamo=True)``
on a ``torch.export`` program (the TorchScript exporter cannot translate ``aten::diag``, which
the LU 1x1 convolution uses), with a dynamic batch dimension (``--static``: a fixed one).

After export (unless told not to) it runs the file with onnxruntime on fresh inputs (another batch size
when the batch is dynamic) and compares it with the eager torch model on the same inputs (its
normal path: the adaptive Newton solver): log_prob by the relative difference
|ort - torch| / max(1, |torch|) (a log-density of thousands of nats carries float32 rounding of
1e-4 in absolute terms), samples by the absolute difference; both within ``--tolerance`` (1e-4).
"""
from __future__ import annotations

from .diagnosis import ExportError, ops_by_step
from .noise import NoiseInput, noise_inputs
from .sources import load_source
from .trace import EMBED_LIMIT, WHAT, ExportResult, export_onnx, stable_translations
from .verify import TOLERANCE, frozen_weights, verify_onnx

__all__ = ["EMBED_LIMIT", "TOLERANCE", "WHAT", "ExportError", "ExportResult", "NoiseInput", "export_onnx",
           "frozen_weights", "load_source", "noise_inputs", "ops_by_step", "stable_translations",
           "verify_onnx"]
