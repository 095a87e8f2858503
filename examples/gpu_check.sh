#!/usr/bin/env bash
# GPU readiness in one table (issue 24; docs/speed.md "GPU checks owed"). Runs every check, prints a
# Markdown table of check / status / figure, exits 1 if any row FAILED. The logic is examples/gpu_check.py.
#   bash examples/gpu_check.sh                      # on a lent GPU: the full check (under 8 minutes)
#   bash examples/gpu_check.sh --device cpu --quick # CI sizes (tests/test_gpu_check.py)
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
exec "${PYTHON:-python}" examples/gpu_check.py "$@"
