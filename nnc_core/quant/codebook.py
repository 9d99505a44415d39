"""Codebook quantization: code indices into a small table of integer levels (§5.6).

Mode "codebook" (as in other NNC encoders' tensor APIs): quantize uniformly, take the
distinct levels as the codebook, pick the zero offset z and the Exp-Golomb order that make
the cheapest stand-alone coding, and keep the codebook only when it is strictly cheaper
than coding the levels directly. Tensors with few distinct, large levels profit.
"""
from dataclasses import dataclass

import numpy as np

from ..bitstream import Codebook
from ..cabac import PayloadEncoder

_TRIAL_GT_FLAGS = 10    # the trial codings use cabac_unary_length_minus1 = 9


@dataclass
class CodebookChoice:
    codebook: Codebook
    indices: np.ndarray          # transmitted levels: index into the codebook minus z


def trial_bytes(levels: np.ndarray, rows: int, cols: int, *, dq: bool = False,
                profile: int = 1) -> int:
    """Size of a stand-alone payload of ``levels`` (no qp field, no row skipping)."""
    encoder = PayloadEncoder()
    encoder.encode_tensor(levels, rows, cols, dq=dq, num_gt=_TRIAL_GT_FLAGS, profile=profile,
                          row_skipping=False, param_opt=True)
    return len(encoder.finish())


def choose_codebook(levels: np.ndarray, rows: int, cols: int,
                    direct_cost_bytes: int) -> CodebookChoice | None:
    """The codebook for uniform ``levels`` if it beats ``direct_cost_bytes``, else None.

    The comparison adds the codebook header in *bits* to payload *bytes*; that unit mix is
    what the standard's reference encoder does, and it is kept so streams match.
    """
    values, index = np.unique(levels.reshape(-1), return_inverse=True)
    index = index.astype(np.int32)
    size = len(values)
    # every codebook entry costs at least one header bit: a large codebook cannot win
    if size >= direct_cost_bytes:
        return None
    costs = [trial_bytes(index - z, rows, cols, profile=0) for z in range(size)]
    zero = int(np.argmin(costs))
    codebook = Codebook.create([int(v) for v in values], zero)
    indices = index - zero
    cost = trial_bytes(indices, rows, cols) + Codebook.header_bits(codebook.values, zero, codebook.egk)
    if cost < direct_cost_bytes:
        return CodebookChoice(codebook, indices)
    return None
