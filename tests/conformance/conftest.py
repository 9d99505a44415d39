"""Fixtures for the conformance tests against the reference NNC software (NNCodec 2.1.3).

The reference runs in its own virtual environment (see ``env.sh``), driven through the
repository's ``reference`` package. If that environment is missing or broken, every
conformance test FAILS with instructions; set ``NNC_SKIP_CONFORMANCE=1`` to skip them instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import reference as reference_module

HERE = Path(__file__).resolve().parent
SKIP_VAR = "NNC_SKIP_CONFORMANCE"

_unavailable: list[str] = []  # reason, once the session fixture has found the reference broken


def _skip_requested() -> bool:
    return os.environ.get(SKIP_VAR, "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"{SKIP_VAR}=1: conformance tests against NNCodec 2.1.3 skipped on request")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.conformance)
            if _skip_requested():
                item.add_marker(skip)


def fail_unavailable(reason: str):
    """Fail the current test loudly: the reference environment is not usable."""
    if not _unavailable:
        _unavailable.append(reason)
    pytest.fail(reference_module.unavailable_banner(reason), pytrace=False)


class LoudRunner:
    """Wraps a ``ReferenceRunner``: a reference that turns out to be unusable when a batch
    starts (package present but not importable) fails the test with the setup banner."""

    def __init__(self, runner):
        self._runner = runner

    def __getattr__(self, name):
        attr = getattr(self._runner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except reference_module.ReferenceUnavailable as e:
                fail_unavailable(str(e))
        return call


@pytest.fixture(scope="session")
def reference():
    """The reference software: a ``reference.ReferenceRunner``, checked once per
    session. Fails every test that uses it, with instructions, if the reference environment
    is missing or broken; skips if NNC_SKIP_CONFORMANCE=1."""
    if _skip_requested():
        pytest.skip(f"{SKIP_VAR}=1: conformance tests against NNCodec 2.1.3 skipped on request")
    try:
        runner = reference_module.ReferenceRunner()
    except reference_module.ReferenceUnavailable as e:
        fail_unavailable(str(e))
    return LoudRunner(runner)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _unavailable:
        terminalreporter.write_line(reference_module.unavailable_banner(_unavailable[0]), red=True, bold=True)
