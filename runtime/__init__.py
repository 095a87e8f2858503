"""The training runtime: data, training loop, evaluation (installed as augflow_dsl.runtime)."""
