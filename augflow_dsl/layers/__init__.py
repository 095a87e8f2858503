"""Torch modules implementing the registry's ops (imported lazily by compile)."""
