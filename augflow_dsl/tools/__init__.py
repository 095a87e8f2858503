"""What only a compiler can give, built on the graph and the runtime: parameter-budget solving
(:mod:`.solve`), spec diffs (:mod:`.diff`), architecture drawings (:mod:`.draw`), ablation sweeps
(:mod:`.sweep`) and ONNX export (:mod:`.onnx_export`). Library code only: plain arguments in,
results out; each command's flags and printing live in :mod:`augflow_dsl.cli` (``cli/<name>.py``),
and nothing here imports that package."""
