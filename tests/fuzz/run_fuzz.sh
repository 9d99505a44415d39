#!/usr/bin/env bash
# Fuzz the NNC decoder: N inputs (default 1,000,000) through the atheris harness, or through
# the pure-Python mutator with --no-atheris (for machines without atheris).
#
#   bash tests/fuzz/run_fuzz.sh [--no-atheris] [N] [CORPUS_DIR] [-- extra arguments]
#
# CORPUS_DIR (default: $TMPDIR/nnc_fuzz_corpus) is filled with the seed corpus when empty;
# atheris adds the inputs it finds interesting to it. Failing inputs go to ARTIFACTS
# (default: $TMPDIR/nnc_fuzz_artifacts/). Prints the number of inputs run and every failure;
# exits 0 when there was none, 1 otherwise, 2 on usage errors. After --, e.g.
# "-- --target differential" fuzzes only differential streams decoded against a decoder
# state, and (with --no-atheris) "-- --workers 2" runs two processes.
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/env/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

engine=atheris
runs=1000000
corpus=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-atheris) engine=python ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *)
            if [[ "$1" =~ ^[0-9]+$ ]]; then runs="$1"
            elif [ -z "$corpus" ]; then corpus="$1"
            else echo "unexpected argument: $1" >&2; exit 2
            fi ;;
    esac
    shift
done
tmp="${TMPDIR:-/tmp}"
corpus="${corpus:-$tmp/nnc_fuzz_corpus}"
artifacts="${ARTIFACTS:-$tmp/nnc_fuzz_artifacts/}"
mkdir -p "$corpus" "$artifacts"
log="$(mktemp "$tmp/nnc_fuzz_log.XXXXXX")"

if [ "$engine" = atheris ] && ! "$python" -c "import atheris" 2>/dev/null; then
    "$python" "$here/fuzz_decode.py" 2>&1 | head -n 5 >&2   # prints how to install atheris
    echo "(or run: bash tests/fuzz/run_fuzz.sh --no-atheris $runs)" >&2
    exit 2
fi

if [ "$engine" = atheris ]; then
    "$python" "$here/fuzz_decode.py" "$corpus" "-runs=$runs" -rss_limit_mb=2048 -timeout=10 \
        "-artifact_prefix=$artifacts" -print_final_stats=1 "${extra[@]}" 2>&1 | tee "$log" \
        | grep --line-buffered -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE)|^INFO: Instrumenting'
    status=${PIPESTATUS[0]}
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    executed="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)"
    echo "inputs run: ${executed:-?} (${done_line:-the run did not finish})"
    if grep -q -E 'Test unit written to|ERROR: libFuzzer' "$log"; then
        echo "FAILURE: see the traceback above; reproduce with"
        grep -o -E 'Test unit written to .*' "$log" | sed 's/Test unit written to /  env\/bin\/python tests\/fuzz\/fuzz_decode.py --reproduce /'
        status=1
    fi
else
    "$python" "$here/fuzz_decode.py" --no-atheris --runs "$runs" --corpus "$corpus" \
        --crash-dir "$artifacts" "${extra[@]}" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
fi
rm -f "$log"
exit "$status"
