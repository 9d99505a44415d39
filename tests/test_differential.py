"""Differential model coding (NNC second edition): nn.encode/decode with a CodingState."""
import copy

import numpy as np
import pytest
import torch

from nnc_core import DecodeError
from nnc_core import nn as nnc_nn
from nnc_core.bitstream import UnitType, parse_stream
from nnc_core.codec import decode_stream
from nnc_core.incremental import CodingState
from reference import model_zoo

ED2 = dict(compress_differences=True, tca=True, hdsp=True)


def headers(bs):
    return {u.content.names[0]: u.content for u in parse_stream(bs) if u.type == UnitType.NDU}


def training_like_sequence(steps=4, seed=0):
    """State dicts of a small CNN with BatchNorm along a noisy descent; the fc layer is
    frozen from step 2 on (its difference to the receiver's base is then exactly zero)."""
    model = model_zoo.build("conv_bn_fc", seed)
    rng = np.random.default_rng(seed)
    sd = {k: v.numpy().copy() for k, v in model.state_dict().items() if v.dim() > 0}
    sequence = [copy.deepcopy(sd)]
    for _ in range(steps - 1):
        sd = {k: (v + rng.normal(0, 0.01, v.shape) * (np.abs(v).mean() + 1e-3)).astype(np.float32)
              for k, v in sd.items()}
        sequence.append(copy.deepcopy(sd))
    return sequence


def code_sequence(sequence, sender, receiver, freeze=None, **options):
    streams, updates = [], []
    for step, sd in enumerate(sequence):
        if freeze and step >= 2:
            sd = {**sd, freeze: sender.base[freeze].copy()}
        coded = nnc_nn.encode_model(sd, state=sender, **options)
        update = nnc_nn.decode(coded.bitstream, state=receiver)
        for name, value in coded.reconstruction.items():
            assert np.array_equal(update[name], value), name
        streams.append(coded.bitstream)
        updates.append(update)
    return streams, updates


@pytest.mark.parametrize("options", [
    dict(qp=-32), dict(qp=-30, compress_differences=True),
    dict(qp=-30, diff_qp=-36, **ED2), dict(qp=-30, sparsity=0.8, **ED2),
    dict(qp=-28, use_dq=False, row_skipping=False, sparsity=0.5, struct_spars_factor=0, **ED2)])
def test_update_sequence_round_trips_exactly(options):
    sequence = training_like_sequence()
    sender, receiver = CodingState(device_id=3), CodingState()
    streams, updates = code_sequence(sequence, sender, receiver, freeze="fc.weight", **options)
    assert set(receiver.base) == set(sequence[0])
    for name in sender.base:
        assert np.array_equal(receiver.base[name], sender.base[name]), name
        total = sum(u[name] for u in updates)
        assert np.allclose(receiver.base[name], total, atol=1e-5), name
        # closed loop: the reconstruction tracks the last model within the quantizer's
        # error (sparsification drops more, and a frozen layer never gets it back)
        if not options.get("sparsity"):
            assert np.abs(receiver.base[name] - sequence[-1][name]).max() < 0.05, name
    last = headers(streams[-1])
    if options.get("compress_differences"):
        assert "fc.weight" not in last                  # all-zero difference: NDU omitted
        assert not np.any(updates[-1]["fc.weight"])
    for name, h in last.items():
        assert (h.device_id, h.put_node_depth) == (3, sender.tensors[name].depth)
        assert h.parent_node_id_present == bool(options.get("compress_differences"))
        assert h.temporal_context_modeling == bool(options.get("tca"))


def test_depths_follow_the_update_tree_and_skip_omitted_ndus():
    sequence = training_like_sequence(steps=4)
    sender, receiver = CodingState(device_id=1), CodingState()
    streams, _ = code_sequence(sequence, sender, receiver, freeze="fc.weight", **ED2)
    depths = [{n: h.put_node_depth for n, h in headers(bs).items()} for bs in streams]
    assert depths[0]["conv.weight"] == 1 and depths[3]["conv.weight"] == 4
    assert depths[1]["fc.weight"] == 2 and "fc.weight" not in depths[2]
    assert sender.tensors["fc.weight"].depth == receiver.tensors["fc.weight"].depth == 2
    assert receiver.device_id == 1


def test_hdsp_decision_never_costs_bytes_and_is_used():
    sequence = training_like_sequence(steps=5, seed=4)
    plain = code_sequence(sequence, CodingState(), CodingState(), qp=-34, sparsity=0.8,
                          compress_differences=True, tca=True)[0]
    sender, receiver = CodingState(), CodingState()
    hdsp = code_sequence(sequence, sender, receiver, qp=-34, sparsity=0.8, **ED2)[0]
    assert all(len(h) <= len(p) for h, p in zip(hdsp, plain))
    assert len(hdsp[0]) == len(plain[0])                # no history before the first update
    replay, used = CodingState(), []
    for bs in hdsp:
        used += [bool(t.info.get("hdsp")) for t in decode_stream(bs, replay)]
    assert any(used)


def test_module_input_codes_weights_as_weights():
    model = model_zoo.build("conv_bn_fc", 0)
    sender, receiver = CodingState(), CodingState()
    nnc_nn.decode(nnc_nn.encode(model, state=sender, qp=-36, sparsity=0.5, **ED2), state=receiver)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    bs = nnc_nn.encode(model, state=sender, qp=-36, **ED2)
    assert parse_stream(bs)[2].content.storage_format == 3
    update = nnc_nn.decode(bs, state=receiver)
    assert np.allclose(update["conv.bias"], 0.01, atol=1e-3)
    restored = nnc_nn.load_decoded(model_zoo.build("conv_bn_fc", 1), receiver.base)
    for name, value in restored.state_dict().items():
        if name in receiver.base:
            assert np.array_equal(value.numpy(), receiver.base[name])


def test_states_save_and_load_mid_sequence(tmp_path):
    sequence = training_like_sequence(steps=4)
    straight = code_sequence(sequence, CodingState(device_id=2), CodingState(), qp=-32,
                             sparsity=0.5, **ED2)[0]
    sender, receiver = CodingState(device_id=2), CodingState()
    resumed = code_sequence(sequence[:2], sender, receiver, qp=-32, sparsity=0.5, **ED2)[0]
    sender.save(tmp_path / "sender.npz")
    receiver.save(tmp_path / "receiver.npz")
    sender, receiver = CodingState.load(tmp_path / "sender.npz"), CodingState.load(tmp_path / "receiver.npz")
    resumed += code_sequence(sequence[2:], sender, receiver, qp=-32, sparsity=0.5, **ED2)[0]
    assert resumed == straight
    (tmp_path / "junk.npz").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="not a coding state"):
        CodingState.load(tmp_path / "junk.npz")


def snapshot(state):
    return ({n: (h.depth, h.levels.copy(), h.significant.copy()) for n, h in state.tensors.items()},
            {n: v.copy() for n, v in state.base.items()}, state.device_id)


def same(a, b):
    return (a[2] == b[2] and a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
            and all(a[0][n][0] == b[0][n][0] and np.array_equal(a[0][n][1], b[0][n][1])
                    and np.array_equal(a[0][n][2], b[0][n][2]) for n in a[0])
            and all(np.array_equal(a[1][n], b[1][n]) for n in a[1]))


def test_streams_that_do_not_fit_the_state_raise_and_leave_it_unchanged():
    sequence = training_like_sequence(steps=3)
    sender, receiver = CodingState(device_id=1), CodingState()
    streams, _ = code_sequence(sequence[:2], sender, receiver, qp=-32, **ED2)
    third = nnc_nn.encode(sequence[2], state=sender, qp=-32, **ED2)
    before = snapshot(receiver)
    cases = {"replayed update": streams[1],                # depth 2 again: expected 3
             "truncated": third[:-7]}
    for what, bs in cases.items():
        with pytest.raises(DecodeError, match="conv|NDU|unit|stream"):
            nnc_nn.decode(bs, state=receiver)
        assert same(snapshot(receiver), before), what
    with pytest.raises(DecodeError, match="'conv.weight'.*depth 3, expected 1"):
        nnc_nn.decode(third, state=CodingState())
    other = CodingState(device_id=9)
    foreign = nnc_nn.encode(sequence[0], state=other, qp=-32, **ED2)
    with pytest.raises(DecodeError, match="device 9"):
        nnc_nn.decode(foreign, state=receiver)
    assert same(snapshot(receiver), before)
    nnc_nn.decode(third, state=receiver)                  # the right stream still decodes
    assert all(np.array_equal(receiver.base[n], sender.base[n]) for n in sender.base)


def test_element_count_mismatch_names_the_tensor():
    sender, receiver = CodingState(), CodingState()
    w = {"w": np.ones((4, 4), np.float32)}
    nnc_nn.decode(nnc_nn.encode(w, state=sender, **ED2), state=receiver)
    other = CodingState()
    other.record("w", 0, 1, np.zeros(16, np.int32))
    bs = nnc_nn.encode({"w": np.ones((2, 4), np.float32)}, state=other, **ED2)
    with pytest.raises(DecodeError, match="'w': 8 elements, the earlier version had 16"):
        nnc_nn.decode(bs, state=receiver)


@pytest.mark.parametrize("options,error,match", [
    ({"tca": True}, ValueError, "compress_differences"),
    ({"hdsp": True}, ValueError, "compress_differences"),
    ({"err_accumulation": True}, NotImplementedError, "federated"),
    ({"bnf": True}, ValueError, "BLOCK"),
])
def test_options_that_cannot_act_raise(options, error, match):
    with pytest.raises(error, match=match):
        nnc_nn.encode(model_zoo.build("conv_bn_fc"), state=CodingState(), **options)


def test_diff_qp_needs_differences_and_a_matching_base():
    with pytest.raises(ValueError, match="diff_qp"):
        nnc_nn.encode({"w": np.ones((2, 2), np.float32)}, diff_qp=-40)
    state = CodingState()
    nnc_nn.encode({"w": np.ones((2, 2), np.float32)}, state=state)
    with pytest.raises(ValueError, match="'w'.*base holds float32 \\[2, 2\\]"):
        nnc_nn.encode({"w": np.ones((2, 3), np.float32)}, state=state)
    with pytest.raises(TypeError, match="CodingState"):
        nnc_nn.encode({"w": np.ones((2, 2), np.float32)}, state={})


def test_diff_qp_sets_the_step_of_differences():
    sender = CodingState()
    w = {"w": np.random.default_rng(0).normal(0, 1, (8, 8)).astype(np.float32)}
    bs = nnc_nn.encode_model(w, state=sender, qp=-20, diff_qp=-40)
    assert bs.tensors[0].qp == -40
