"""The reference NNC software (NNCodec 2.1.3), driven from the project's environment.

Shared by the conformance tests (``tests/conformance``) and the benchmarks
(``benchmarks/``): one driver runs inside the reference's own virtual environment
(``driver.py``, started as a script; it pins numpy < 2), one runner starts it from here
(``runner.py``). ``model_zoo`` holds the small PyTorch models that both implementations
build from the same seed. ``nnc_core`` never imports this package.

    from reference import ReferenceRunner, EncodeCase
    ref = ReferenceRunner()          # ReferenceUnavailable, with a how-to, if it is missing
    (r,) = ref.encode_many([EncodeCase(x, {"qp": -32})])

``python -m reference`` checks the installation; ``bash tests/conformance/env.sh`` makes it.
"""
from .runner import (
    DEFAULT_VENV,
    DRIVER,
    REF_VERSION,
    SETUP_HINT,
    DecodeCase,
    EncodeCase,
    ModelEncodeCase,
    RefResult,
    ReferenceJobError,
    ReferenceRunner,
    ReferenceSession,
    ReferenceUnavailable,
    check_reference,
    default_runner,
    ref_decode,
    ref_decode_many,
    ref_encode,
    ref_encode_many,
    reference_python,
    run_jobs,
    unavailable_banner,
)

__all__ = [
    "DEFAULT_VENV", "DRIVER", "REF_VERSION", "SETUP_HINT", "DecodeCase", "EncodeCase",
    "ModelEncodeCase", "RefResult", "ReferenceJobError", "ReferenceRunner", "ReferenceSession",
    "ReferenceUnavailable", "check_reference", "default_runner", "ref_decode", "ref_decode_many",
    "ref_encode", "ref_encode_many", "reference_python", "run_jobs", "unavailable_banner",
]
