"""Regenerate the golden bitstream hashes (a deliberate act: only when the encoder output
is meant to change). Run from the repository root: ``env/bin/python tests/regenerate_golden.py``
(it writes ``tests/expected/golden_hashes.json``; ``golden_cases`` sits next to this script)."""
import hashlib
import json
import pathlib

from golden_cases import CASES
from nnc_core.tensor import encode

if __name__ == "__main__":
    hashes = {name: hashlib.sha256(encode(make(), **options)).hexdigest()
              for name, (make, options) in CASES.items()}
    path = pathlib.Path(__file__).resolve().parent / "expected" / "golden_hashes.json"
    path.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(hashes)} hashes to {path}")
