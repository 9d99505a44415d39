#!/usr/bin/env bash
# Set up everything the repository needs, in one command:
#
#   bash create_env.sh                     # ./env, pinned dependencies, compiled core, data
#   bash create_env.sh --with-reference    # ... and the reference NNCodec venv (conformance tests)
#   bash create_env.sh --with-nncf         # ... and NNCF 3.4.0 in ./env (benchmarks/nncf_anchor.py)
#
# Safe to run again: every step is skipped when it is already done, so a second run takes
# a second or two. Settings (environment variables):
#   PYTHON=python3.11          interpreter for the new venv (default: python3)
#   NNC_WITH_REFERENCE=1       same as --with-reference
#   NNC_WITH_NNCF=1            same as --with-nncf
#   NNC_DEBUG=1                build the Cython core with bounds checks and assertions
#   NNC_SKIP_DATA=1            do not try to install Fashion-MNIST
#   NNC_FORCE_BUILD=1          rebuild the Cython core even if nothing changed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

ENV_DIR="$ROOT/env"
PY="$ENV_DIR/bin/python"
DATA_DIR=/usr/share/datasets/fashion-mnist
DATA_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
            t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
WITH_REFERENCE="${NNC_WITH_REFERENCE:-0}"
WITH_NNCF="${NNC_WITH_NNCF:-0}"
START=$SECONDS

say() { echo "[create_env] $*"; }
die() { echo "[create_env] ERROR: $*" >&2; exit 1; }
trap 'echo "[create_env] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

for arg in "$@"; do
    case "$arg" in
        --with-reference) WITH_REFERENCE=1 ;;
        --with-nncf) WITH_NNCF=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

hash_of() {  # sha256 of the named files' contents (missing files count as empty)
    local f
    for f in "$@"; do [ -f "$f" ] && cat "$f"; echo "--$f--"; done | sha256sum | cut -d' ' -f1
}

# --- 1. virtual environment -------------------------------------------------------------
BASE_PY="${PYTHON:-python3}"
if [ -e "$ENV_DIR" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    # A venv whose interpreter is gone (moved checkout, removed Python): start over.
    [ -f "$ENV_DIR/pyvenv.cfg" ] || die "$ENV_DIR exists but is not a virtual environment; move it away"
    say "env/ is broken (its interpreter does not run); recreating it"
    rm -rf "$ENV_DIR"
fi
if [ ! -x "$PY" ]; then
    command -v "$BASE_PY" >/dev/null 2>&1 || die "$BASE_PY not found; install Python >= 3.10 or set PYTHON=/path/to/python3"
    "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$("$BASE_PY" -V 2>&1) is too old; Python >= 3.10 is needed (set PYTHON=...)"
    say "creating env/ with $("$BASE_PY" -V 2>&1)"
    "$BASE_PY" -m venv "$ENV_DIR" \
        || die "'$BASE_PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# --- 2. pinned dependencies ---------------------------------------------------------------
REQ_STAMP="$ENV_DIR/.requirements.sha256"
req_hash="$(hash_of requirements.txt)-$("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$REQ_STAMP" 2>/dev/null)" != "$req_hash" ]; then
    say "installing requirements.txt (torch takes about a minute)"
    rm -f "$REQ_STAMP" "$ENV_DIR/.build.sha256"
    "$PY" -m pip install --disable-pip-version-check -q -r requirements.txt \
        || die "pip could not install requirements.txt (see the pip output above)"
    echo "$req_hash" > "$REQ_STAMP"
else
    say "requirements.txt already installed"
fi

# --- 3. the package, with its compiled Cython core ---------------------------------------
BUILD_STAMP="$ENV_DIR/.build.sha256"
shopt -s nullglob
CORE_SOURCES=(setup.py pyproject.toml nnc_core/cabac/*.pyx nnc_core/cabac/*.pxd)
shopt -u nullglob
build_hash="$(hash_of "${CORE_SOURCES[@]}")-debug=${NNC_DEBUG:-0}"
core_built() {
    # Every .pyx has its compiled module next to it and the package imports from ./env.
    local pyx
    for pyx in nnc_core/cabac/*.pyx; do
        [ -e "$pyx" ] || continue
        compgen -G "${pyx%.pyx}.*.so" >/dev/null || compgen -G "${pyx%.pyx}.*.pyd" >/dev/null || return 1
    done
    (cd /tmp && "$PY" -c 'import nnc_core') >/dev/null 2>&1
}
if [ "${NNC_FORCE_BUILD:-0}" != "0" ] || [ "$(cat "$BUILD_STAMP" 2>/dev/null)" != "$build_hash" ] || ! core_built; then
    command -v "${CXX:-c++}" >/dev/null 2>&1 \
        || die "no C++ compiler found (on Debian/Ubuntu: apt-get install build-essential python3-dev)"
    say "building the Cython core and installing nnc_core in editable mode${NNC_DEBUG:+ (NNC_DEBUG=$NNC_DEBUG)}"
    rm -f "$BUILD_STAMP"
    "$PY" -m pip install --disable-pip-version-check -q --no-build-isolation -e . \
        || die "building nnc_core failed (see the compiler output above; a C++17 compiler and Python headers are needed)"
    core_built || die "nnc_core was installed but its compiled core does not import; run: env/bin/python -c 'import nnc_core'"
    echo "$build_hash" > "$BUILD_STAMP"
else
    say "nnc_core already built and installed"
fi

# --- 4. Fashion-MNIST (Debian package dataset-fashion-mnist) -----------------------------
have_data() {
    local f
    for f in "${DATA_FILES[@]}"; do [ -f "$DATA_DIR/$f" ] || return 1; done
}
if have_data; then
    say "Fashion-MNIST found in $DATA_DIR"
elif [ "${NNC_SKIP_DATA:-0}" != "0" ]; then
    say "NNC_SKIP_DATA is set: not installing Fashion-MNIST"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed (set NNC_SKIP_DATA=1 to skip the data)"
    apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || die "apt-get install dataset-fashion-mnist failed (set NNC_SKIP_DATA=1 to skip the data)"
    have_data || die "dataset-fashion-mnist is installed but $DATA_DIR lacks the IDX files"
else
    say "Fashion-MNIST is not installed. The codec and its tests do not need it; the training"
    say "scripts do. Get it with:  sudo apt-get install dataset-fashion-mnist"
    say "(Debian/Ubuntu), or put the four *-ubyte.gz files of Fashion-MNIST into $DATA_DIR."
fi

# --- 5. optional: the reference NNCodec in its own venv ----------------------------------
if [ "$WITH_REFERENCE" != "0" ]; then
    [ -f tests/conformance/env.sh ] || die "tests/conformance/env.sh is missing"
    say "setting up the reference NNCodec (tests/conformance/env.sh)"
    bash tests/conformance/env.sh || die "tests/conformance/env.sh failed"
fi

# --- 6. optional: NNCF 3.4.0 in ./env (requirements-nncf.txt) ------------------------------
if [ "$WITH_NNCF" != "0" ]; then
    NNCF_STAMP="$ENV_DIR/.requirements-nncf.sha256"
    nncf_hash="$(hash_of requirements-nncf.txt)-$req_hash"
    if [ "$(cat "$NNCF_STAMP" 2>/dev/null)" != "$nncf_hash" ] || ! "$PY" -c 'import nncf' >/dev/null 2>&1; then
        say "installing requirements-nncf.txt (NNCF 3.4.0 and what it needs, about 240 MB)"
        rm -f "$NNCF_STAMP"
        "$PY" -m pip install --disable-pip-version-check -q -r requirements-nncf.txt \
            || die "pip could not install requirements-nncf.txt (see the pip output above)"
        echo "$nncf_hash" > "$NNCF_STAMP"
    else
        say "requirements-nncf.txt already installed"
    fi
fi

say "done in $((SECONDS - START)) s. Run:  env/bin/python main.py"
