"""Checkpoint streams stay conformant: NNCodec 2.1.3 decodes streams that record dtypes
(``nnr_decompressed_data_format`` in NDU headers, the topology-data note) and tied names,
to exactly the values we decode before restoring dtypes: float32 for quantized tensors,
int32 for integer ones, each tied tensor once under its first name."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reference as ref
from nnc_core import nn as nnc_nn
from nnc_core.codec import decode_stream

pytestmark = pytest.mark.conformance


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(40, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.out = torch.nn.Linear(16, 40, bias=False)
        self.out.weight = self.tok.weight


def _streams() -> dict[str, bytes]:
    torch.manual_seed(0)
    r = np.random.default_rng(0)
    mixed = {"w16": r.normal(0, 0.05, (12, 9)).astype(np.float16),
             "wbf": torch.randn(10, 8).to(torch.bfloat16),
             "b64": r.normal(0, 0.05, 7),
             "q8": r.integers(-128, 128, (6, 5)).astype(np.int8),
             "u8": r.integers(0, 256, 11).astype(np.uint8),
             "ids": np.arange(4, dtype=np.int64),
             "mask": r.random(5) > 0.5,
             "step": np.int64(3)}
    half = TiedLM().half()
    return {"mixed": nnc_nn.encode(mixed, keep_dtypes=True, qp=-36),
            "mixed_codebook": nnc_nn.encode(mixed, keep_dtypes=True, approx_method="codebook"),
            "tied_module": nnc_nn.encode(TiedLM(), qp=-34),
            "tied_half_dq": nnc_nn.encode(half, keep_dtypes=True, use_dq=True)}


@pytest.fixture(scope="module")
def decoded(reference, tmp_path_factory):
    streams = _streams()
    jobs = [ref.DecodeCase(bs, tensor_id=None, id=name) for name, bs in streams.items()]
    out = reference.run_cases(jobs, workdir=tmp_path_factory.mktemp("reference_checkpoints"))
    return streams, {r.id: r for r in out}


@pytest.mark.parametrize("name", ["mixed", "mixed_codebook", "tied_module", "tied_half_dq"])
def test_reference_decodes_checkpoint_streams(decoded, name):
    streams, by_id = decoded
    theirs = by_id[name].unwrap().decoded
    ours = {t.name: t.values for t in decode_stream(streams[name])}
    assert list(theirs) == list(ours)
    for tensor, value in ours.items():
        other = np.asarray(theirs[tensor])
        assert other.dtype == value.dtype and other.shape == value.shape, tensor
        assert np.array_equal(other, value), tensor
