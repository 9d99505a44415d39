"""nnc_core.tools.sparsify on hand-computed cases (NNCodec's semantics: see the module)."""
import numpy as np
import pytest

from nnc_core import tensor as nnc_tensor
from nnc_core.tools.sparsify import sparsify, sparsify_structured, sparsify_unstructured, zero_share

HALF_STEP_QP32 = 2.0 ** -9          # qp -32 at density 2: step 4 * 2^-10 = 2^-8


def test_half_step_zeroing_is_the_first_step():
    w = np.array([[0.001, -0.0019, 0.00196, -0.5]], np.float32)
    out = sparsify_unstructured({"w": w}, target=0.1, qp=-32)["w"]
    # |w| < 2^-9 = 0.001953125 goes; 0.00196 stays; the 50 % reached exceed the target
    assert out.tolist() == [[0.0, 0.0, np.float32(0.00196), -0.5]]
    assert abs(w[0, 2]) >= HALF_STEP_QP32 > abs(w[0, 1])


def test_target_share_counts_every_tensor_but_prunes_only_weights():
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(0, 0.1, (8, 4, 3, 3)).astype(np.float32),
               "conv.bias": rng.normal(0, 0.1, 8).astype(np.float32),
               "frozen.weight": np.zeros((4, 4), np.float32),
               "conv.weight_scaling": rng.normal(1, 0.1, (8, 1)).astype(np.float32)}
    before = {k: v.copy() for k, v in tensors.items()}
    out = sparsify_unstructured(tensors, target=0.6, qp=-32)
    assert zero_share(out) >= 0.6
    for name in ("conv.bias", "frozen.weight", "conv.weight_scaling"):
        assert np.array_equal(out[name], before[name]), name
    for name, value in tensors.items():                   # the input is left alone
        assert np.array_equal(value, before[name])
    # one threshold per tensor: every kept magnitude is above every removed one
    w, kept = before["conv.weight"], out["conv.weight"] != 0
    assert np.abs(w[kept]).min() > np.abs(w[~kept]).max()
    assert np.array_equal(out["conv.weight"][kept], w[kept])


def test_threshold_schedule_matches_the_formula():
    """After the half-step cut, d grows from 0.25 by 0.2 / 0.1 / 0.05 / 0.01 (gap to the
    target >= 0.3 / 0.1 / 0.05 / less) until the threshold max(|mu -+ d sigma|) zeroes the
    target share; mu and sigma are those of the tensor after the half-step cut."""
    w = np.linspace(-1, 1, 201, dtype=np.float32).reshape(1, -1)
    out = sparsify_unstructured({"w": w}, target=0.5, qp=-32)["w"]
    cut = np.where(np.abs(w) >= np.float32(HALF_STEP_QP32), w, 0)
    mu, sigma = float(np.mean(cut)), float(np.std(cut))
    delta, expected = 0.25, cut
    while np.mean(expected == 0) < 0.5:
        gap = 0.5 - np.mean(expected == 0)
        delta += 0.01 if gap < 0.05 else 0.05 if gap < 0.1 else 0.1 if gap < 0.3 else 0.2
        threshold = np.float32(max(abs(mu - delta * sigma), abs(mu + delta * sigma)))
        expected = np.where(np.abs(cut) >= threshold, cut, 0)
    assert delta > 0.5 and np.array_equal(out, expected)


def test_rounds_count_nan_and_negative_zero_as_the_cut_does():
    """The rounds count the values each threshold keeps without cutting; a NaN is never kept
    (the cut sets it to 0) and -0.0 counts as a zero, so the stop comes where cutting every
    round would put it."""
    w = np.array([[np.nan, -0.0, 0.5, -0.6, 0.7, -0.8, 0.01, -0.02]], np.float32)
    out = sparsify_unstructured({"w": w, "b": np.array([0.0, 1.0], np.float32)},
                                target=0.5, qp=-32)
    assert out["w"][0, :2].tolist() == [0.0, 0.0] and not np.isnan(out["w"]).any()
    assert out["b"].tolist() == [0.0, 1.0]
    assert zero_share(out) == 0.5          # 4 of 8 weights and 1 of 2 bias values


def test_structured_zeroes_the_weakest_channels():
    w = np.array([[1.0, -1.0], [0.1, 0.1], [-0.2, 0.2], [2.0, 2.0]], np.float32)
    # channel means 1, 0.1, 0.2, 2: mean 0.825, x0.9 = 0.7425; rows 1 and 2 are below
    out = sparsify_structured({"w": w, "b": np.ones(4, np.float32)}, gain=0.9)
    assert out["w"].tolist() == [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]
    assert out["b"].tolist() == [1.0] * 4


def test_sparsify_runs_both_steps_and_zero_is_off():
    rng = np.random.default_rng(1)
    tensors = {"w": rng.normal(0, 1, (16, 32)).astype(np.float32)}
    assert sparsify(tensors, 0.0, qp=-32)["w"] is tensors["w"]
    unstructured = sparsify(tensors, 0.5, qp=-32, struct_spars_factor=0)["w"]
    both = sparsify(tensors, 0.5, qp=-32, struct_spars_factor=0.9)["w"]
    assert zero_share({"w": unstructured}) >= 0.5
    assert np.all((both == 0) >= (unstructured == 0))          # structured only adds zeros
    assert np.any(np.all(both == 0, axis=1))


def test_tensor_api_applies_sparsity_before_quantization():
    x = np.random.default_rng(2).normal(0, 0.1, (32, 32)).astype(np.float32)
    y = nnc_tensor.decode(nnc_tensor.encode(x, sparsity=0.7, struct_spars_factor=0))
    assert np.mean(y == 0) >= 0.7
    assert len(nnc_tensor.encode(x, sparsity=0.7)) < len(nnc_tensor.encode(x)) / 2


@pytest.mark.parametrize("options", [{"sparsity": -0.1}, {"sparsity": 1.0}, {"sparsity": "0.5"},
                                     {"sparsity": 0.5, "struct_spars_factor": -1}])
def test_bad_sparsity_options_raise(options):
    with pytest.raises(ValueError):
        nnc_tensor.encode(np.ones((4, 4), np.float32), **options)
