"""Importers of the papers' own checkpoints: DenseFlow (PyTorch) and VFlow (TensorFlow), mapped
name by name onto a compiled spec (``augflow-dsl import``)."""
