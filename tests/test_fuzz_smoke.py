"""Short fuzzing run of the decoder (the long runs are described in tests/fuzz/README.md).

20,000 mutants of the seed corpus go through the pure-Python structure-aware mutator and every
decoder entry point; if atheris is installed, a coverage-guided run of 10,000 inputs runs at the
same time in a subprocess. Any outcome other than a result or a DecodeError fails, and so does
an input that takes more than a second to decode. 3,000 differential inputs (model updates
decoded against a right or wrong receiver state) must also leave the state unchanged whenever
decoding fails. The reproducers of fixed failures in tests/fuzz/crashes/ are replayed.
"""
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FUZZ_DIR = Path(__file__).parent / "fuzz"
CRASHES = FUZZ_DIR / "crashes"
PURE_RUNS = 20_000
DIFF_RUNS = 3_000
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
                              max_rss_mb=_rss_limit_mb(), target="plain")
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
    """Inputs that once broke the decoder now decode or raise DecodeError, in bounded time
    (a differential one against the state saved next to it)."""
    data = path.read_bytes()
    state = harness.load_state_for(str(path), data)
    assert harness.check_input(data, max_rss_mb=_rss_limit_mb(), state=state) < SLOW_SECONDS


@pytest.mark.parametrize("path", sorted(p for p in CRASHES.glob("open-*.bin")
                                        if Path(harness.state_path(str(p))).exists()),
                         ids=lambda p: p.name)
@pytest.mark.xfail(strict=True, reason="open decoder bug (tests/fuzz/crashes/README.md); "
                                       "once fixed, drop the open- prefix of the reproducer")
def test_open_differential_reproducers(path):
    data = path.read_bytes()
    harness.check_input(data, max_rss_mb=_rss_limit_mb(),
                        state=harness.load_state_for(str(path), data))


# ------------------------------------------------------------------ differential streams

def test_differential_seeds_meet_their_states():
    """Each update decodes with the right state and is refused by a wrong one (one step behind
    or ahead, fresh, another device, another model); the harness's check passes on all."""
    outcomes = {}
    for name, data in harness.diff_seeds():
        harness.check_input(data, max_rss_mb=_rss_limit_mb())
        outcomes[name] = harness._last_diff_outcome[0]
    assert len(outcomes) >= 100
    for name, outcome in outcomes.items():
        label = name.split("_step", 1)[1].split("_", 1)[1]
        empty_update = outcome == "empty"          # an all-zero update has no NDU to refuse
        if label == "right":
            assert outcome in ("applied", "empty"), name
        elif label != "other_device" or "step0" not in name:   # step 0 of another device
            assert outcome == "state" or empty_update, (name, outcome)  # meets a fresh state
    assert sum(o == "applied" for o in outcomes.values()) >= 15


def test_differential_states_survive_save_and_load(tmp_path):
    """Every state the harness decodes against (damaged ones too) is exactly what
    CodingState.save / load give back, so a saved reproducer state is the state that failed."""
    for selector in range(len(harness.diff_states())):
        for tweak in (0, 1, 6, 8, 10, 0x39):
            state = harness.diff_state(selector, tweak)
            state.save(tmp_path / "s.npz")
            loaded = harness.CodingState.load(tmp_path / "s.npz")
            assert harness.state_fingerprint(loaded) == harness.state_fingerprint(state), \
                (selector, tweak)


def test_differential_check_catches_a_state_changed_by_a_failure(monkeypatch):
    """The harness itself: a decoder that advances the state and then raises DecodeError is a
    failure, and so is one that returns a non-finite update."""
    import nnc_core.nn as nnc_nn
    data = next(d for n, d in harness.diff_seeds() if n.endswith("_step1_right"))
    real = nnc_nn.decode_stream

    def advances_then_fails(stream, state, **kwargs):
        real(stream, state, **kwargs)
        raise harness.DecodeError("damaged")
    monkeypatch.setattr(nnc_nn, "decode_stream", advances_then_fails)
    with pytest.raises(harness.WrongResult, match="state changed"):
        harness.check_input(data, max_rss_mb=_rss_limit_mb())

    def non_finite(stream, state, **kwargs):
        tensors = real(stream, state, **kwargs)
        tensors[0].values = np.full_like(tensors[0].values, np.inf)
        return tensors
    monkeypatch.setattr(nnc_nn, "decode_stream", non_finite)
    with pytest.raises(harness.WrongResult, match="non-finite"):
        harness.check_input(data, max_rss_mb=_rss_limit_mb())


def test_differential_fuzz(tmp_path):
    """A short run of the differential target: no failure, and most inputs get past the
    update-tree checks into the level decoding with a primed (non-fresh) state."""
    start = time.monotonic()
    stats = harness.pure_fuzz(runs=DIFF_RUNS, seed=1517, crash_dir=str(tmp_path), timeout=10.0,
                              slow_seconds=SLOW_SECONDS, max_rss_mb=_rss_limit_mb(),
                              target="differential")
    failures = "\n\n".join(tb for _, _, tb in stats["failures"][:3])
    assert not stats["failures"], f"{len(stats['failures'])} failing inputs:\n{failures}"
    assert stats["runs"] == stats["diff_runs"] == DIFF_RUNS
    assert stats["max_seconds"] < SLOW_SECONDS
    primed = stats["diff_primed"]
    reached = primed["applied"] + primed["deep"]
    assert reached > DIFF_RUNS // 5, stats["diff_primed"]
    assert primed["applied"] > DIFF_RUNS // 100 and primed["state"] > DIFF_RUNS // 20, primed
    assert time.monotonic() - start < 30


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
