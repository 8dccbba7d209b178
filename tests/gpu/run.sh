#!/usr/bin/env bash
# The GPU check of pydevis (issue 19 item 7), for a machine with an NVIDIA GPU: at most ~8 min on
# a 16-core box with an H200 (the build ~2-3 min, the tests ~2 min, the bench <1 min).
#
#  1. fails at once when no GPU is visible (nvidia-smi, then the CUDA runtime itself);
#  2. builds _C and _cuda (cuBLAS from the toolkit or the nvidia-cublas wheel) into a temporary
#     copy of the package, for CUDAARCHS (default: native, the GPU at hand);
#  3. runs every CUDA test with PYDEVIS_REQUIRE_CUDA=1 (a CUDA test that would skip fails
#     instead): the kernels against the numpy oracle and the C++ kernels (tests/kernels -m cuda,
#     tests/test_hostile_kernels.py -m cuda), both conv algorithms, the device-resident ascent
#     and, where onnxruntime-gpu is installed, the ort backend on the CUDA provider
#     (tests/gpu/test_device_ascent.py);
#  4. times every kernel, C++ vs CUDA, printing the GPU's name (tests/gpu/bench_cuda.py; a CUDA
#     result that differs from the C++ one fails the run).
# Exit status: 0 only when all of that passed. PYTHON picks the interpreter (default python3),
# JOBS the compile jobs (default: all cores), BENCH_JSON a file for the bench's rows. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
start=$SECONDS
fail() { echo "tests/gpu/run.sh: FAILED: $*" >&2; exit 1; }
step() { echo "== [$((SECONDS - start)) s] $*"; }

# 1. a GPU, or stop here
step "GPU"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi -L | grep -q "^GPU " || fail "nvidia-smi lists no GPU"
nvidia-smi -L
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["numpy", "onnx", "onnxruntime", "pytest", "hypothesis", "pybind11", "scipy_openblas32",
        "PIL", "typer", "rich", "jinja2", "matplotlib", "numba"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYEOF
)
[ -z "$missing" ] \
    || fail "$PY lacks: $missing (pip install them, or PYTHON=<an interpreter with them>)"
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || fail "no nvcc"
export PATH="$PATH:/usr/local/cuda/bin"

# 2. the build, in a temporary copy of the package (the checkout's own builds untouched)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pydevis-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step "build (CUDA architectures ${CUDAARCHS:-native})"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if ! PYDEVIS_STRICT_BUILD=1 cmake -S "$ROOT" -B "$WORK/build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDAARCHS:-native}" \
        -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
        >"$WORK/configure.log" 2>&1 \
   || ! cmake --build "$WORK/build" -j "${JOBS:-$(nproc)}" >"$WORK/build.log" 2>&1; then
    cat "$WORK"/configure.log "$WORK"/build.log 2>/dev/null | tail -60
    fail "the build of _C / _cuda"
fi
grep -E "pydevis: (_cuda uses|building _cuda|no cuBLAS)" "$WORK/configure.log" || true
mkdir -p "$WORK/site"
cp -r "$ROOT/pydevis" "$WORK/site/pydevis"
find "$WORK/site/pydevis" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cp "$WORK"/build/_C.*.so "$WORK"/build/_cuda.*.so "$WORK/site/pydevis/"
skip=$(find "$ROOT/build" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | paste -sd: - || true)
run() {  # the copy, not an installed or editable pydevis (a PYTHONPATH given stays behind it:
        # the GPU machine gets scipy-openblas32 that way, as a carried wheel)
    env PYTHONSAFEPATH=1 PYTHONPATH="$WORK/site:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}" SKBUILD_EDITABLE_SKIP="$skip" \
        PYDEVIS_REQUIRE_CPP=1 PYDEVIS_REQUIRE_CUDA=1 "$@"
}
run "$PY" - "$WORK/site" <<'PYEOF' || fail "the built pydevis._cuda does not load or sees no GPU"
import sys
import pydevis, pydevis._cuda as C, pydevis.kernels as K
assert pydevis.__file__.startswith(sys.argv[1]), f"imported {pydevis.__file__}"
print(f"pydevis._cuda on {C.device_name(0)}; cuBLAS {C.has_cublas}; backends {K.available()}")
assert K.available()["cuda"] is None, K.available()["cuda"]
assert C.has_cublas, "built without cuBLAS: the GEMM conv would go untested"
PYEOF

# 3. the tests
step "tests"
status=0
run "$PY" -m pytest -q -p no:cacheprovider -rs -m cuda tests/kernels tests/gpu "$@" 2>&1 \
    | tee "$WORK/pytest.log" || status=$?
[ $status = 0 ] || fail "CUDA tests (above)"
# the fuzz of the bindings, its CUDA half (not marked: selected by name)
run "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_hostile_kernels.py "$@" 2>&1 \
    | tee -a "$WORK/pytest.log" || status=$?
[ $status = 0 ] || fail "CUDA fuzz tests (above)"
if grep -E "^SKIPPED.*(unavailable|no CUDA device|not built|no cuBLAS)" "$WORK/pytest.log"; then
    fail "CUDA tests skipped (above) on a GPU machine"
fi
if grep -q "onnxruntime has no usable CUDA" "$WORK/pytest.log"; then
    echo "tests/gpu/run.sh: NOTE: onnxruntime-gpu is not installed: the ort backend's CUDA provider"
    echo "  branch (DeviceImage on a real IOBinding) was NOT run; its device state was, through a"
    echo "  stand-in binding (test_device_image_ascent_equals_the_host_one)."
fi

# 4. the bench
step "bench: C++ vs CUDA"
run "$PY" "$ROOT/tests/gpu/bench_cuda.py" ${BENCH_JSON:+--json "$BENCH_JSON"} || fail "a CUDA kernel differs from the C++ one (above)"
step "tests/gpu/run.sh: passed"
