#!/usr/bin/env bash
# The test command of the README: on a fresh machine it creates .venv (if absent), installs
# pydevis with its test extra (the C++ extension must build: PYDEVIS_STRICT_BUILD=1), then runs
#   1. the whole suite on the default backends, requiring the C++ one (PYDEVIS_REQUIRE_CPP=1);
#   2. the kernel, rule and torch-oracle tests again on the numba fallback only;
#   3. the kernel tests and the bindings' fuzz against a _C built with AddressSanitizer and UBSan
#      (tests/run_sanitizers.sh, about a minute and a half on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
PYDEVIS_STRICT_BUILD=1 python -m pip install -q ".[test]"
# `pytest` (not `python -m pytest`): the installed package, with its extension, is what is tested.
PYDEVIS_REQUIRE_CPP=1 pytest "$@"
PYDEVIS_BACKEND=numba pytest -q tests/kernels tests/test_rules.py \
    tests/test_backward_torch.py "$@"
PYTHON="$PWD/.venv/bin/python" bash tests/run_sanitizers.sh
