"""Result tables of a compression run: the per-layer table and the entropy-coder comparison.

The comparison codes the same integer levels four ways: DeepCABAC (the NNC bitstream),
a static Huffman code, bzip2, and their zeroth-order entropy (the bound of any memoryless
code; a context-adaptive coder such as DeepCABAC can go below it). The levels are the
*transmitted* ones: under dependent quantization that is ``k``, not the reconstruction
integer ``r`` (the reference demo measured ``r``, whose entropy is higher, and so
overstated the bound).
"""
from __future__ import annotations

import json
from pathlib import Path


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, heading, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([format(row[k], f) if row.get(k) is not None else "-" for k, _, f in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


LAYER_COLUMNS = [("name", "tensor", "s"), ("shape", "shape", "s"), ("kind", "kind", "s"),
                 ("qp", "qp", "d"), ("params", "params", "d"), ("bytes", "bytes", "d"),
                 ("bits_per_param", "bits/param", ".3f"), ("sparsity", "zeros %", ".1f")]

CODER_COLUMNS = [("coder", "coder", "s"), ("bytes", "bytes", "d"),
                 ("bits_per_param", "bits/param", ".3f"), ("ratio", "ratio", ".1f")]

RUN_COLUMNS = [("qp", "qp", "d"), ("metric_name", "metric", "s"), ("original", "original", ".2f"),
               ("decoded", "decoded", ".2f"), ("drop", "drop", "+.2f"),
               ("compressed_bytes", "bytes", "d"), ("ratio", "ratio", ".1f"),
               ("bits_per_param", "bits/param", ".3f"), ("weight_sparsity", "zeros %", ".1f")]


def layer_table(layers: list[dict]) -> str:
    rows = [dict(l, shape="x".join(map(str, l["shape"]))) for l in layers]
    return format_table(rows, LAYER_COLUMNS)


def coder_table(coders: dict, original_bytes: int, params: int) -> str:
    rows = [{"coder": name, "bytes": int(b), "bits_per_param": 8 * b / max(params, 1),
             "ratio": original_bytes / b if b else float("inf")} for name, b in coders.items()]
    return format_table(rows, CODER_COLUMNS)


BASELINE_COLUMNS = [("method", "baseline", "s"), ("metric_name", "metric", "s"),
                    ("decoded", "decoded", ".2f"), ("compressed_bytes", "bytes", "d"),
                    ("bits_per_param", "bits/param", ".3f")]
PERPLEXITY_COLUMN = ("perplexity", "perplexity", ".4f")


def _with_perplexity(rows: list[dict], columns: list) -> list:
    """The columns, with perplexity after the metric's for language models."""
    if not any("perplexity" in r for r in rows):
        return columns
    at = [k for k, _, _ in columns].index("decoded") + 1
    return columns[:at] + [PERPLEXITY_COLUMN] + columns[at:]


def run_table(runs: list[dict]) -> str:
    return format_table(runs, _with_perplexity(runs, RUN_COLUMNS))


def baseline_table(rows: list[dict]) -> str:
    return format_table(rows, _with_perplexity(rows, BASELINE_COLUMNS))


def write_json(data, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path
