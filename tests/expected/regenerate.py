"""Regenerate the golden bitstream hashes (a deliberate act: only when the encoder output
is meant to change). Run: ``python tests/expected/regenerate.py``."""
import hashlib
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from golden_cases import CASES  # noqa: E402

from nnc_core.tensor import encode  # noqa: E402

if __name__ == "__main__":
    hashes = {name: hashlib.sha256(encode(make(), **options)).hexdigest()
              for name, (make, options) in CASES.items()}
    path = pathlib.Path(__file__).with_name("golden_hashes.json")
    path.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(hashes)} hashes to {path}")
