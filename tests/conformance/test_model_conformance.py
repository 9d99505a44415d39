"""Model-level conformance with NNCodec 2.1.3 (``nnc.compress_model`` / ``nnc.decompress``).

For every case the reference codes a small PyTorch model from ``model_zoo`` and we code the
same model with ``nnc_core.nn.encode``; then (a) the reference decodes our bitstream to
exactly our decode, (b) we decode its bitstream to exactly its decode, and (c) the two
bitstreams are identical. Local scaling adaptation trains scales on data, so its streams
are compared for (a) only.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from nnc_core import nn as nnc_nn
from reference import model_zoo

pytestmark = pytest.mark.conformance

# (id, zoo model, our options; the reference gets the same qp/nonweight_qp/use_dq/bnf/opt_qp
# and row_skipping=True, which nncodec.nn.encode also uses)
CASES = [
    ("plain_dq", "conv_bn_fc", dict(qp=-32)),
    ("plain_nodq", "conv_bn_fc", dict(qp=-38, use_dq=False)),
    ("plain_coarse", "small_resnet", dict(qp=-20, nonweight_qp=-40)),
    ("bnf", "conv_bn_fc", dict(qp=-32, bnf=True)),
    ("bnf_nodq", "conv_bn_fc", dict(qp=-30, bnf=True, use_dq=False)),
    ("bnf_new_bias", "conv_nobias_bn_fc", dict(qp=-32, bnf=True)),
    ("bnf_resnet", "small_resnet", dict(qp=-28, bnf=True)),
    ("opt_qp", "conv_bn_fc", dict(qp=-32, opt_qp=True)),
    ("opt_qp_bnf", "small_resnet", dict(qp=-38, opt_qp=True, bnf=True)),
]
REF_KEYS = ("qp", "nonweight_qp", "use_dq", "bnf", "opt_qp")


def _ref_args(opts: dict) -> dict:
    args = {"qp": -32, "nonweight_qp": -75, "use_dq": True, "row_skipping": True}
    args.update({k: v for k, v in opts.items() if k in REF_KEYS})
    return args


def _lsa_stream():
    """Our LSA stream (+ BNF) of the small ResNet, trained on a few random batches."""
    import torch
    model = model_zoo.build("small_resnet")
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g))
            for _ in range(4)]
    return {name: nnc_nn.encode(model, train_loader=data, lsa=True, bnf=bnf, qp=-26, lr=1e-2)
            for name, bnf in (("lsa", False), ("lsa_bnf", True))}


@pytest.fixture(scope="module")
def results(reference, tmp_path_factory):
    ours = {name: nnc_nn.encode(model_zoo.build(model), **opts) for name, model, opts in CASES}
    ours.update(_lsa_stream())
    jobs = [ref.ModelEncodeCase(model, _ref_args(opts), id=name) for name, model, opts in CASES]
    jobs += [ref.DecodeCase(bs, tensor_id=None, id=f"{name}/ours") for name, bs in ours.items()]
    out = reference.run_cases(jobs, workdir=tmp_path_factory.mktemp("reference_models"))
    by_id = {r.id: r for r in out}
    return ours, by_id


def _assert_same_dicts(actual: dict, expected: dict, what: str):
    assert list(actual) == list(expected), f"{what}: names {list(actual)} != {list(expected)}"
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}: {name} {a.dtype}{a.shape} vs {e.dtype}{e.shape}"
        assert np.array_equal(a, e), f"{what}: {name} differs (max {np.max(np.abs(a - e))})"


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_identical_bytes(results, name):
    ours, by_id = results
    theirs = by_id[name].unwrap().bitstream
    assert ours[name] == theirs, f"{name}: {len(ours[name])} bytes vs the reference's {len(theirs)}"


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_we_decode_reference(results, name):
    _, by_id = results
    r = by_id[name].unwrap()
    _assert_same_dicts(nnc_nn.decode(r.bitstream, apply_scaling=False), r.decoded, name)


@pytest.mark.parametrize("name", [c[0] for c in CASES] + ["lsa", "lsa_bnf"])
def test_reference_decodes_ours(results, name):
    ours, by_id = results
    r = by_id[f"{name}/ours"].unwrap()
    _assert_same_dicts(r.decoded, nnc_nn.decode(ours[name], apply_scaling=False), name)


def test_bnf_decoded_model_matches_original(results):
    """Sanity of the folding itself: at a fine qp the decoded, folded model computes what
    the original computes."""
    import torch
    for model_name in ("conv_bn_fc", "conv_nobias_bn_fc", "small_resnet"):
        model = model_zoo.build(model_name)
        bs = nnc_nn.encode(model, qp=-80, nonweight_qp=-100, bnf=True)
        restored = nnc_nn.load_decoded(model_zoo.build(model_name, seed=1), nnc_nn.decode(bs))
        x = torch.randn(*model_zoo.INPUT_SHAPES[model_name])
        with torch.no_grad():
            assert torch.allclose(restored(x), model(x), atol=1e-4), model_name
