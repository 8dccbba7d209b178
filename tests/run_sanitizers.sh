#!/usr/bin/env bash
# The kernel tests against a build of pydevis._C with AddressSanitizer and UBSan (issue 7, item 5).
#
# Builds _C alone (no _cuda) with -DPYDEVIS_SANITIZE=ON into a temporary directory, puts it in a
# copy of the pydevis package, and runs tests/kernels and tests/test_hostile_kernels.py (the fuzz of
# the bindings) on that copy with the sanitizer runtimes preloaded (python is not instrumented).
# Fails when the build fails, when the sanitized module is not the one under test, when a test
# fails, and when a sanitizer reports anything (both abort on the first error and report file and
# line: the build keeps its debug information). Before them, the thread pool alone under
# ThreadSanitizer (tests/cpp/pool_stress.cpp, built with -fsanitize=thread). Extra arguments go
# to pytest. Needs gcc, cmake and the venv of tests/run.sh (PYTHON overrides it); JOBS compile
# jobs (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pydevis-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

# 1. the sanitized extension (cmake and ninja from PyPI when the machine has no cmake)
if ! command -v cmake >/dev/null; then
    "$PY" -m pip install -q "cmake>=3.21" ninja
    PATH="$(dirname "$PY"):$PATH"
fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if ! cmake -S "$ROOT" -B "$WORK/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPYDEVIS_SANITIZE=ON -DPYDEVIS_CUDA=OFF -DPython_EXECUTABLE="$PY" \
        -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$WORK/configure.log" 2>&1 \
   || ! cmake --build "$WORK/build" --target _C -j "${JOBS:-2}" >"$WORK/build.log" 2>&1; then
    cat "$WORK"/configure.log "$WORK"/build.log 2>/dev/null | tail -40
    echo "run_sanitizers.sh: FAILED to build the sanitized _C" >&2
    exit 1
fi
so=$(ls "$WORK"/build/_C.*.so)

# 2. a copy of the package holding it (python files only: no other build of _C or _cuda)
mkdir -p "$WORK/site"
cp -r "$ROOT/pydevis" "$WORK/site/pydevis"
find "$WORK/site/pydevis" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cp "$so" "$WORK/site/pydevis/"

# 3. the tests, with the runtimes preloaded (PYTHONSAFEPATH: the checkout's pydevis is not on
#    sys.path, the copy is)
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
for lib in "$libasan" "$libubsan"; do
    [ -f "$lib" ] || { echo "run_sanitizers.sh: no $lib (gcc's sanitizer runtime)" >&2; exit 1; }
done
# An editable install (scikit-build-core) maps pydevis._C to its own build whatever sys.path
# says; its finder stands aside for the build folders listed in SKBUILD_EDITABLE_SKIP.
skip=$(find "$ROOT/build" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | paste -sd: -)
run() {
    env LD_PRELOAD="$libasan $libubsan" PYTHONSAFEPATH=1 PYTHONPATH="$WORK/site:$ROOT/tests" \
        SKBUILD_EDITABLE_SKIP="$skip" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        PYDEVIS_BACKEND=cpp PYDEVIS_REQUIRE_CPP=1 "$@"
}
run "$PY" -c "import sys, pydevis._C as m; sys.exit(not m.__file__.startswith('$WORK/site/')
                                                    and f'imported {m.__file__} instead')" || {
    echo "run_sanitizers.sh: cannot import the sanitized pydevis._C" >&2; exit 1; }
status=0
# The thread pool under ThreadSanitizer, driven from C++ (tests/cpp/pool_stress.cpp): every item
# of every loop run once, every throw delivered, no race, on teams larger than the cores, with
# workers spinning and sleeping.
if ! "${CXX:-c++}" -std=c++17 -O1 -g -fsanitize=thread -pthread -I"$ROOT/csrc/common" \
        "$ROOT/tests/cpp/pool_stress.cpp" "$ROOT/csrc/common/parallel.cpp" \
        -o "$WORK/pool_stress" 2>"$WORK/tsan_build.log"; then
    cat "$WORK/tsan_build.log"
    echo "run_sanitizers.sh: FAILED to build tests/cpp/pool_stress.cpp with -fsanitize=thread" >&2
    exit 1
fi
for spin in 200 0; do  # workers that spin between loops, and workers that sleep at once
    # setarch -R: TSAN's shadow memory needs the classic address layout on some kernels
    if ! out=$(PYDEVIS_SPIN_US=$spin TSAN_OPTIONS=halt_on_error=1 \
               setarch "$(uname -m)" -R "$WORK/pool_stress" 2>&1); then
        echo "$out"
        echo "run_sanitizers.sh: the thread pool under TSAN failed (PYDEVIS_SPIN_US=$spin)" >&2
        status=1
    else
        echo "pool_stress PYDEVIS_SPIN_US=$spin: $out"
    fi
done
# --capture=sys: the sanitizers write to file descriptor 2, which pytest must leave alone (an
# aborting process never prints what pytest captured).
run "$PY" -m pytest -q -p no:cacheprovider --capture=sys \
    tests/kernels tests/test_hostile_kernels.py "$@" 2>&1 | tee "$WORK/pytest.log" || status=$?
if grep -qE "ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer" "$WORK/pytest.log"
then
    echo "run_sanitizers.sh: a sanitizer reported an error (above)" >&2
    status=1
fi
echo "run_sanitizers.sh: $([ $status = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit $status
