"""Short fuzzing run of the decoder (the long runs are described in tests/fuzz/README.md).

20,000 mutants of the seed corpus go through the pure-Python structure-aware mutator and every
decoder entry point; if atheris is installed, a coverage-guided run of 10,000 inputs runs at the
same time in a subprocess. Any outcome other than a result or a DecodeError fails, and so does
an input that takes more than a second to decode. The reproducers of fixed failures in
tests/fuzz/crashes/ are replayed.
"""
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).parent / "fuzz"
CRASHES = FUZZ_DIR / "crashes"
PURE_RUNS = 20_000
ATHERIS_RUNS = 10_000
SLOW_SECONDS = 1.0


def _load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_decode", FUZZ_DIR / "fuzz_decode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load_codec()
    return module


harness = _load_harness()


def _rss_limit_mb() -> float:
    """Peak-RSS limit for this process: other tests may already have raised the peak."""
    return harness.peak_rss_mb() + 512


def _has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


@pytest.fixture(scope="module", autouse=True)
def atheris_run(tmp_path_factory):
    """Starts the atheris run in the background so that it overlaps the pure-Python run."""
    if not _has_atheris():
        yield None
        return
    work = tmp_path_factory.mktemp("atheris")
    corpus = work / "corpus"
    corpus.mkdir()
    cmd = [sys.executable, str(FUZZ_DIR / "fuzz_decode.py"), str(corpus), f"-runs={ATHERIS_RUNS}",
           "-rss_limit_mb=2048", "-timeout=10", "-max_total_time=50", "-seed=1",
           f"-artifact_prefix={work}/", "-print_final_stats=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(FUZZ_DIR.parent.parent))
    yield proc, work
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_seed_corpus_decodes():
    seeds = harness.seeds()
    assert len(seeds) >= 40
    decoded = 0
    for name, data in seeds:
        harness.check_input(data, max_rss_mb=_rss_limit_mb())
        try:
            harness.decode(data)
            decoded += 1
        except harness.DecodeError:
            assert name.startswith(("incremental", "vector_incremental")), name
    assert decoded >= len(seeds) - 8


def test_pure_python_fuzz(tmp_path):
    start = time.monotonic()
    stats = harness.pure_fuzz(runs=PURE_RUNS, seed=20240, crash_dir=str(tmp_path),
                              timeout=10.0, slow_seconds=SLOW_SECONDS,
                              max_rss_mb=_rss_limit_mb())
    assert stats["runs"] == PURE_RUNS
    failures = "\n\n".join(tb for _, _, tb in stats["failures"][:3])
    assert not stats["failures"], f"{len(stats['failures'])} failing inputs:\n{failures}"
    assert stats["max_seconds"] < SLOW_SECONDS
    # the mutator gets past the headers: many inputs fail inside payloads, some decode fully
    assert stats["deep"] > PURE_RUNS // 10 and stats["decoded"] > PURE_RUNS // 100
    assert time.monotonic() - start < 60


def test_structured_mutator_respects_max_size():
    import random
    rng = random.Random(3)
    for name, data in harness.seeds()[:20]:
        for max_size in (1, 16, 64, 4096):
            out = harness.structured_mutate(data, max_size, rng,
                                            lambda d, m: harness.byte_mutate(d, m, rng))
            assert isinstance(out, bytes) and len(out) <= max_size


@pytest.mark.parametrize("path", sorted(p for p in CRASHES.glob("*.bin")
                                        if not p.name.startswith("open-")),
                         ids=lambda p: p.name)
def test_fixed_reproducers(path):
    """Inputs that once broke the decoder now decode or raise DecodeError, in bounded time."""
    assert harness.check_input(path.read_bytes(), max_rss_mb=_rss_limit_mb()) < SLOW_SECONDS


def test_parallel_decoding_agrees_with_sequential():
    """Block rows decoded in parallel from the header's entry points give the sequential result:
    a wrong entry point is an error on both paths (tests/fuzz/crashes/README.md)."""
    data = (CRASHES / "parallel-entry-point.bin").read_bytes()
    outcomes = []
    for threads in (1, 2, 4):
        try:
            outcomes.append(harness.decode(data, threads=threads).tobytes())
        except harness.DecodeError:
            outcomes.append("DecodeError")
    assert outcomes == ["DecodeError"] * 3


@pytest.mark.skipif(not _has_atheris(), reason="atheris not installed "
                                               "(pip install -r tests/fuzz/requirements.txt)")
def test_atheris_fuzz(atheris_run):
    proc, work = atheris_run
    try:
        output, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail("the atheris run did not finish in time:\n" + output[-3000:])
    artifacts = [p.name for p in work.iterdir() if p.is_file()]
    assert proc.returncode == 0 and not artifacts, output[-6000:]
    assert "Done " in output, output[-3000:]
    assert "Uncaught Python exception" not in output
