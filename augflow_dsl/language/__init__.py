"""The language: parse (.flow text -> syntax tree), evaluate (-> typed spec), load."""
from .load import load, loads  # noqa: F401
from .models import Spec  # noqa: F401
