"""Differential model coding against the reference (NNCodec 2.1.3), both ways, byte for byte.

A sequence of training-like updates of a CNN with BatchNorm and of a small transformer is
coded by ``nnc_core.nn.encode(..., state=...)`` and, from the same float differences, by the
reference's incremental coding (its sparsification, then ``nnc.compress`` with an
``approx_param_base`` state that it advances; its HDSP tool where ``hdsp`` is on). Each
stream must be identical, the reference must decode ours exactly with a state of its own,
and we must decode the reference's exactly with ours. One tensor is frozen from the third
stream on, so that its difference is exactly zero and its NDU is omitted.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnc_core import nn as nnc_nn
from nnc_core.incremental import CodingState
from reference import model_zoo

STEPS = 4                      # the full model, then three updates
FROZEN_FROM = 2
DEVICE_ID = 2

# name -> nnc_core.nn options; each is also what the reference job receives
CONFIGS = {
    "edition1_state": dict(qp=-32),
    "differences": dict(qp=-32, compress_differences=True),
    "tca": dict(qp=-32, compress_differences=True, tca=True),
    "tca_sparsity50": dict(qp=-30, compress_differences=True, tca=True, sparsity=0.5),
    "tca_sparsity80_unstructured": dict(qp=-30, compress_differences=True, tca=True,
                                        sparsity=0.8, struct_spars_factor=0),
    "tca_hdsp_sparsity80_diff_qp": dict(qp=-30, diff_qp=-34, compress_differences=True,
                                        tca=True, hdsp=True, sparsity=0.8),
    # the defaults of NNCodec's federated pipeline (nncodec.fl.nncargs)
    "fl_defaults": dict(qp=-26, use_dq=False, row_skipping=False, compress_differences=True,
                        tca=True, sparsity=0.6, struct_spars_factor=0.9),
}
MODELS = {"conv_bn_fc": "fc.weight", "tiny_transformer": "blocks.0.attn.out_proj.weight"}


def update_sequence(model_name: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """State dicts along a noisy descent: every step moves each tensor by about 1 % of its
    mean magnitude (BatchNorm statistics too), as a few SGD steps would."""
    model = model_zoo.build(model_name, seed)
    rng = np.random.default_rng(seed + 100)
    sd = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items() if v.dim() > 0}
    out = [sd]
    for _ in range(STEPS - 1):
        sd = {k: (v + rng.normal(0, 0.01, v.shape) * (np.abs(v).mean() + 1e-3)).astype(np.float32)
              for k, v in sd.items()}
        out.append(sd)
    return out


def reference_args(options: dict) -> dict:
    """Every option spelled out, so that no default of either side decides anything."""
    return {"qp": options["qp"], "diff_qp": options.get("diff_qp", options["qp"]),
            "use_dq": options.get("use_dq", True), "row_skipping": options.get("row_skipping", True),
            "nonweight_qp": -75, "param_opt": True,
            "compress_differences": options.get("compress_differences", False),
            "tca": options.get("tca", False), "hdsp": options.get("hdsp", False),
            "sparsity": options.get("sparsity", 0.0),
            "struct_spars_factor": options.get("struct_spars_factor", 0.9)}


def code_ours(sequence, frozen, options, workdir):
    """Our streams and decoded updates; writes the float differences the reference codes."""
    sender, receiver = CodingState(device_id=DEVICE_ID), CodingState()
    streams, decoded, inputs = [], [], []
    for step, sd in enumerate(sequence):
        if step >= FROZEN_FROM:
            sd = {**sd, frozen: sender.base[frozen].copy()}
        difference = {k: v - sender.base[k] if k in sender.base else v for k, v in sd.items()}
        path = workdir / f"difference_{step}.npz"
        np.savez(path, **difference)
        inputs.append(path.name)
        bs = nnc_nn.encode(sd, state=sender, **options)
        (workdir / f"ours_{step}.nnc").write_bytes(bs)
        streams.append(bs)
        decoded.append(nnc_nn.decode(bs, state=receiver))
    return streams, decoded, inputs


def load_npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def runs(reference, tmp_path_factory):
    """Every (model, config) sequence, coded by us and by the reference in one batch."""
    cases, jobs = {}, []
    for model_name, frozen in MODELS.items():
        sequence = update_sequence(model_name)
        for config, options in CONFIGS.items():
            key = f"{model_name}-{config}"
            workdir = tmp_path_factory.mktemp(key)
            streams, decoded, inputs = code_ours(sequence, frozen, options, workdir)
            cases[key] = (workdir, frozen, streams, decoded)
            jobs.append({
                "op": "update_sequence", "id": key, "device_id": DEVICE_ID,
                "args": reference_args(options),
                "inputs": [str(workdir / p) for p in inputs],
                "bitstreams": [str(workdir / f"ref_{i}.nnc") for i in range(STEPS)],
                "decoded": [str(workdir / f"ref_{i}.npz") for i in range(STEPS)],
                "foreign": [str(workdir / f"ours_{i}.nnc") for i in range(STEPS)],
                "foreign_decoded": [str(workdir / f"ours_by_ref_{i}.npz") for i in range(STEPS)],
            })
    results = reference.run_jobs(jobs, tmp_path_factory.mktemp("ref"))
    return cases, {r["id"]: r for r in results}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("model_name", MODELS)
def test_update_streams_match_the_reference(runs, model_name, config):
    cases, results = runs
    key = f"{model_name}-{config}"
    workdir, frozen, streams, decoded = cases[key]
    result = results[key]
    assert result["ok"], result["traceback"]
    receiver = CodingState()
    for step in range(STEPS):
        ref_stream = (workdir / f"ref_{step}.nnc").read_bytes()
        assert ref_stream == streams[step], f"{key}: stream {step} differs"
        # the reference decodes ours, with its own state
        by_ref = load_npz(workdir / f"ours_by_ref_{step}.npz")
        assert by_ref, f"{key}: the reference decoded nothing from stream {step}"
        for name, value in by_ref.items():
            assert np.array_equal(value, decoded[step][name]), (key, step, name)
        # we decode the reference's stream with a state of our own
        ours_of_ref = nnc_nn.decode(ref_stream, state=receiver)
        ref_decoded = load_npz(workdir / f"ref_{step}.npz")
        assert set(ref_decoded) <= set(ours_of_ref)
        for name, value in ref_decoded.items():
            assert np.array_equal(value, ours_of_ref[name]), (key, step, name)
        if step >= FROZEN_FROM and CONFIGS[config].get("compress_differences"):
            assert frozen not in ref_decoded          # all-zero NDU omitted by both
            assert not np.any(ours_of_ref[frozen])
