#!/usr/bin/env bash
# Set up the reference NNC software (NNCodec 2.1.3) for the conformance tests.
#
# NNCodec pins numpy<2, so it gets its own virtual environment:
#     tests/conformance/.refenv          (git-ignored)
# The project's environment is left untouched.
#
# Usage:
#     bash tests/conformance/env.sh
#
# Environment:
#     NNC_REF_PYTHON     use this interpreter instead; it is only checked, nothing is installed
#     NNC_REF_BASE_PYTHON  interpreter used to create the venv (default: python3)
#
# Safe to run repeatedly: when the venv already imports nncodec 2.1.3 nothing is done.
set -euo pipefail

REF_VERSION="2.1.3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.refenv"
BASE_PYTHON="${NNC_REF_BASE_PYTHON:-python3}"

say()  { printf '[env.sh] %s\n' "$*"; }
fail() { printf '[env.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the nncodec version the interpreter imports; non-zero exit if it cannot.
ref_version() {
    "$1" - <<'EOF' 2>/dev/null
import importlib.metadata as m
import nncodec, nncodec.tensor, nncodec.nnc  # noqa: F401  (the full import chain, torch included)
print(m.version("nncodec"))
EOF
}

# True if interpreter $1 imports nncodec at REF_VERSION.
is_ready() {
    local v
    [ -x "$1" ] || return 1
    v="$(ref_version "$1" | tail -n 1)" || return 1
    [ "$v" = "$REF_VERSION" ]
}

if [ -n "${NNC_REF_PYTHON:-}" ]; then
    say "NNC_REF_PYTHON is set: checking $NNC_REF_PYTHON (nothing will be installed)"
    [ -x "$NNC_REF_PYTHON" ] || fail "NNC_REF_PYTHON=$NNC_REF_PYTHON is not an executable file"
    if is_ready "$NNC_REF_PYTHON"; then
        say "OK: $NNC_REF_PYTHON imports nncodec $REF_VERSION"
        exit 0
    fi
    found="$(ref_version "$NNC_REF_PYTHON" | tail -n 1 || true)"
    fail "$NNC_REF_PYTHON does not import nncodec $REF_VERSION (found: ${found:-none}). Install it there with '$NNC_REF_PYTHON -m pip install nncodec==$REF_VERSION', or unset NNC_REF_PYTHON to use $VENV"
fi

say "checking $VENV for nncodec $REF_VERSION"
if is_ready "$VENV/bin/python"; then
    say "OK: $VENV already imports nncodec $REF_VERSION; nothing to do"
    exit 0
fi

command -v "$BASE_PYTHON" >/dev/null 2>&1 || fail "'$BASE_PYTHON' not found; set NNC_REF_BASE_PYTHON to a Python 3 interpreter"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "reusing the existing venv $VENV (nncodec $REF_VERSION missing or broken there)"
else
    say "creating the venv $VENV with $("$BASE_PYTHON" --version 2>&1) ($BASE_PYTHON -m venv)"
    "$BASE_PYTHON" -m venv --clear "$VENV" \
        || fail "'$BASE_PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

say "installing nncodec==$REF_VERSION and its dependencies (torch among them; this takes a few minutes)"
"$VENV/bin/python" -m pip install "nncodec==$REF_VERSION" \
    || fail "pip install nncodec==$REF_VERSION failed (see the pip output above)"

say "checking the installation"
if ! is_ready "$VENV/bin/python"; then
    "$VENV/bin/python" -c 'import nncodec, nncodec.tensor, nncodec.nnc' || true
    fail "$VENV/bin/python still cannot import nncodec $REF_VERSION (see the error above)"
fi
say "OK: reference environment ready: $VENV/bin/python (nncodec $REF_VERSION)"
say "the conformance tests find it automatically: env/bin/python -m pytest tests/conformance"
