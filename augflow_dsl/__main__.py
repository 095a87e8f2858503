"""``python -m augflow_dsl ...`` (what ``torchrun ... -m augflow_dsl train SPEC`` runs)."""
import sys

from .cli import main

sys.exit(main())
