"""What only a compiler can give, built on the graph and the runtime: parameter-budget solving
(``solve``), a static memory plan (``check --memory``), spec diffs (``diff``), architecture drawings
(``draw``), ablation sweeps (``sweep``) and ONNX export (``export``). One module per tool; each
registers its own subcommand through ``add_command(sub, common)``."""
