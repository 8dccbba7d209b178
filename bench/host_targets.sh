#!/usr/bin/env bash
# The issue-15 CPU figures on a lent machine in one prepared call (the GPU machine's host is a
# 16-core Intel Xeon with AVX-512 and AMX: the project's other CPU kind): builds pydevis._C
# (no CUDA) into a temporary copy of the package, then, each under its own time limit, writes
# JSON under OUT (default bench/results):
#
#  1. host_t2.json: the 2-thread targets, the process pinned to 2 cores (taskset -c 0,1), both
#     OpenMP policies (bench/ascent_step.py --threads 2 --backends cpp);
#  2. host_census16.json: bench/scaling_census.py --threads 16 (one core, a team of 16);
#  3. host_t16.json: the same step at 16 threads (or all the cores), once.
# Each step's output also goes to a .log beside its JSON (the per-net lines survive a step that
# runs out of time before it writes its JSON).
#
# Budget: the device tool lends 15 minutes in all, machine start included, and 10 per call; the
# three steps stop at T2_S, CENSUS_S and T16_S seconds (default 300, 40, 150: ~8.5 min with the
# build, ~20 s here and ~1 min on 16 cores). A step stopped early writes no JSON; its log keeps
# the lines of the nets it finished (AlexNet first, then CaffeNet, SqueezeNet, ResNet-18,
# MobileNetV2, VGG-16; the passive worker before the default one). On the GPU machine
# (scipy-openblas32 carried as a wheel in .whl/, as for tests/gpu/run.sh):
#     pip install --target /tmp/site .whl/scipy_openblas32-*.whl
#     PYTHONPATH=/tmp/site OUT=$OUT bash bench/host_targets.sh
# PYTHON picks the interpreter (default python3: it needs numpy, onnx, onnxruntime, torch,
# pybind11, scipy_openblas32; a PYTHONPATH given stays behind the built copy). Exit status: 0
# when every step finished or ran out of time; non-zero on a build failure or a failed gradient
# check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/bench/results}
mkdir -p "$OUT"
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pydevis-host.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step "build _C"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if ! PYDEVIS_STRICT_BUILD=1 cmake -S "$ROOT" -B "$WORK/build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release -DPYDEVIS_CUDA=OFF \
        -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
        >"$WORK/configure.log" 2>&1 \
   || ! cmake --build "$WORK/build" -j "$(nproc)" --target _C >"$WORK/build.log" 2>&1; then
    cat "$WORK"/configure.log "$WORK"/build.log 2>/dev/null | tail -40
    echo "bench/host_targets.sh: the build of _C failed" >&2
    exit 1
fi
mkdir -p "$WORK/site"
cp -r "$ROOT/pydevis" "$WORK/site/pydevis"
find "$WORK/site/pydevis" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cp "$WORK"/build/_C.*.so "$WORK/site/pydevis/"
mkdir -p "$WORK/onnx"  # the nets' ONNX exports, made once by the first step
# the copy, not an installed or editable pydevis (as tests/gpu/run.sh)
SKBUILD_EDITABLE_SKIP=$(find "$ROOT/build" -mindepth 1 -maxdepth 1 -type d 2>/dev/null \
    | paste -sd: - || true)
export SKBUILD_EDITABLE_SKIP PYDEVIS_REQUIRE_CPP=1 \
    PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -P -c "import pydevis, pydevis._C as C; assert C.__file__.startswith('$WORK/site'), C.__file__"
lscpu | grep -E "Model name|^CPU\(s\)" || true

status=0
limited() {  # seconds, then the command: 124 (out of time) is not a failure
    local s=$1
    shift
    timeout --signal=INT --kill-after=20 "$s" "$@" \
        || { rc=$?; [ $rc = 124 ] || [ $rc = 130 ] || status=$rc; }
}
step "2 threads, pinned to cores 0 and 1"
limited "${T2_S:-300}" taskset -c 0,1 "$PY" bench/ascent_step.py --threads 2 --backends cpp \
    --repeats 5 --budget 4 --onnx-dir "$WORK/onnx" --out-dir "$OUT" --name host_t2 \
    > >(tee "$OUT/host_t2.log") 2>&1
step "loop census, a team of 16"
limited "${CENSUS_S:-40}" "$PY" bench/scaling_census.py --threads 16 --onnx-dir "$WORK/onnx" \
    --json "$OUT/host_census16.json" > >(tee "$OUT/host_census16.log") 2>&1
step "$(nproc) threads"
limited "${T16_S:-150}" "$PY" bench/ascent_step.py --threads "$(nproc)" --backends cpp \
    --repeats 5 --budget 2 --onnx-dir "$WORK/onnx" --out-dir "$OUT" --name host_t16 \
    > >(tee "$OUT/host_t16.log") 2>&1
step "bench/host_targets.sh: done (status $status)"
exit $status
