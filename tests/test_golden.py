"""Golden bitstream hashes: any change of the encoder output shows up here.

If a change is intended, regenerate with ``python tests/regenerate_golden.py`` and
say why in the commit message.
"""
import hashlib
import json
import pathlib

import pytest

from golden_cases import CASES
from nnc_core.tensor import encode

HASHES = json.loads((pathlib.Path(__file__).parent / "expected" / "golden_hashes.json").read_text())


def test_every_case_has_a_hash():
    assert set(HASHES) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bitstream_hash(name):
    make, options = CASES[name]
    assert hashlib.sha256(encode(make(), **options)).hexdigest() == HASHES[name]
