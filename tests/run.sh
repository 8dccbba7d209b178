#!/usr/bin/env bash
# The test command of the README: on a fresh machine it creates .venv (if absent), installs
# pydevis with its test extra (the C++ extension must build: PYDEVIS_STRICT_BUILD=1), type-checks
# the package (mypy), then runs
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
# Type check first ([tool.mypy] in pyproject.toml): a type error fails in seconds, not after the
# suite.
mypy
# The report's browser test needs headless Chromium (Debian package `chromium`): installed here
# when absent and we are root (CI is), then required, so the test cannot silently skip.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
        >/dev/null || echo "tests/run.sh: could not install chromium" >&2
fi
if command -v chromium >/dev/null; then export PYDEVIS_REQUIRE_BROWSER=1; fi
# `pytest` (not `python -m pytest`): the installed package, with its extension, is what is tested.
PYDEVIS_REQUIRE_CPP=1 pytest "$@"
PYDEVIS_BACKEND=numba pytest -q tests/kernels tests/test_rules.py \
    tests/test_backward_torch.py "$@"
PYTHON="$PWD/.venv/bin/python" bash tests/run_sanitizers.sh
