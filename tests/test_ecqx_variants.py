"""The ECQx variants against the relevance lock-in and the official protocol's choices, each
shown to act on a hand-made layer or a tiny network: the factor on non-zero weights only,
the ECQ warm-up, LRP every k steps, the relevance sources, the smoothing reset, the cap of
beta, the official lambda_max, the signed straight-through gradient, and the protocols."""
import math

import pytest
import torch

from ecqx import Grid, assignment_costs, lambda_max, make_grid, relevance_assign, shadow_gradient
from ecqx.assign import (LAMBDA_MAX, cluster_probabilities, information_content, lambda_max_official,
                         zero_factor)
from ecqx.composites import make_composite
from ecqx.protocol import PROTOCOLS, ProtocolError, resolve
from ecqx.quantizer import ModelQuantizer
from ecqx.relevance import weight_relevances
from ecqx.sources import make_source
from ecqx.train import RelevanceTracker, make_optimizers, train_epoch

HAND_GRID = Grid(1.0, -1, 2)                       # centroids -1, 0, 1, 2
HAND_INFO = torch.tensor([3.0, 1.0, 2.0, 3.0])
# A: zero now, ECQ regrows it (0.9 -> 1); B: non-zero and relevant, ECQ prunes it (0.45 -> 0);
# C: zero, stays zero; D: non-zero, stays non-zero
HAND_W = torch.tensor([0.9, 0.45, 0.0, 0.0, 2.0, 2.0])
HAND_R = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.5, 0.5])      # mean 0.5: beta starts at 1
HAND_NONZERO = torch.tensor([False, True, False, False, True, True])


def test_ecq_on_the_hand_layer_regrows_a_and_prunes_b():
    plain = assignment_costs(HAND_W, HAND_GRID, 0.1, HAND_INFO).argmin(1)
    assert plain.tolist() == [2, 1, 1, 1, 3, 3]


def test_relevance_on_all_weights_locks_the_pattern_in():
    indices, beta, converged = relevance_assign(HAND_W, HAND_GRID, 0.1, HAND_INFO, HAND_R, p=0.2)
    # A (relevance 0) finds zero almost free and stays pruned; B (relevance 1) stays
    assert converged and beta == pytest.approx(1.0)
    assert indices.tolist() == [1, 2, 1, 1, 3, 3]


def test_nonzero_only_factor_leaves_zero_weights_cost_unchanged():
    factor = zero_factor(HAND_R, 1.0, factor_on=HAND_NONZERO)
    assert factor[~HAND_NONZERO].tolist() == [1.0, 1.0, 1.0]
    assert factor[HAND_NONZERO].tolist() == pytest.approx([2.0, 1.0, 1.0])
    indices, _, converged = relevance_assign(HAND_W, HAND_GRID, 0.1, HAND_INFO, HAND_R, p=0.2,
                                             factor_on=HAND_NONZERO)
    # A regrows as in ECQ, B is still kept by its relevance
    assert converged and indices.tolist() == [2, 2, 1, 1, 3, 3]


def _small_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))


def _batches(n=4, seed=1):
    torch.manual_seed(seed)
    return [(torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))) for _ in range(n)]


def _composite():
    return make_composite("epsilon_plus_flat_bn_pass")


def test_quantizer_nonzero_mode_regrows_exactly_where_ecq_does():
    net = _small_net()
    q = {mode: ModelQuantizer(_small_net(), bits=2, Lambda=0.05, relevance_on=mode)
         for mode in ("all", "nonzero")}
    ecq = ModelQuantizer(net, bits=2, Lambda=0.05)
    torch.manual_seed(2)
    noise = {name: 0.5 * s.shadow.std() * torch.randn_like(s.shadow) for name, s in ecq.layers.items()}
    before = {}
    for quantizer in (ecq, *q.values()):        # the same "training step" on the shadows
        for name, state in quantizer.layers.items():
            state.shadow.add_(noise[name])
            before[name] = state.indices.clone()
    # relevances of the quantized network: exactly zero on every zero weight
    params = {mode: dict(quantizer.model.named_parameters()) for mode, quantizer in q.items()}
    ecq.quantize()
    for mode, quantizer in q.items():
        quantizer.quantize({n: params[mode][n].detach().abs() + 0.0 for n in quantizer.names})
    regrown = blocked = 0
    for name, state in ecq.layers.items():
        was_zero = before[name] == state.grid.zero_index
        grows = was_zero & (state.indices != state.grid.zero_index)
        assert torch.equal(q["nonzero"].layers[name].indices[was_zero], state.indices[was_zero])
        regrown += int(grows.sum())
        blocked += int((q["all"].layers[name].indices[grows] == state.grid.zero_index).sum())
    assert regrown > 0 and blocked > 0            # the lock-in the variant removes


def test_warmup_trains_plain_ecq_first():
    data = _batches(4)
    runs = {}
    for warmup in (0, 4, 2):
        net = _small_net()
        q = ModelQuantizer(net, bits=2, Lambda=0.05)
        tracker = RelevanceTracker(_composite(), warmup=warmup) if warmup else None
        train_epoch(net, q, data, make_optimizers(net, q, 1e-3), "cpu", relevance=tracker, verbose=False)
        runs[warmup] = (torch.cat([s.indices for s in q.layers.values()]),
                        tracker.passes if tracker else 0, [s.beta for s in q.layers.values()])
    assert torch.equal(runs[4][0], runs[0][0]) and runs[4][1] == 0      # all warm-up: ECQ
    assert runs[2][1] == 2 and all(b > 0 for b in runs[2][2])


def test_lrp_every_k_steps_reuses_the_last_relevances():
    net = _small_net()
    q = ModelQuantizer(net, bits=3, Lambda=0.05)
    tracker = RelevanceTracker(_composite(), every=3, warmup=1)
    returned = [tracker.update(net, q, x, y) for x, y in _batches(8)]
    assert returned[0] is None and tracker.passes == 3            # steps 2, 5 and 8
    assert all(returned[2][n] is returned[1][n] for n in q.names)
    assert not torch.equal(returned[4]["4.weight"], returned[1]["4.weight"])
    with pytest.raises(ValueError, match="every"):
        RelevanceTracker(_composite(), every=0)


def test_smoothing_reset_each_epoch():
    net = _small_net()
    q = ModelQuantizer(net, bits=3, Lambda=0.05)
    (x1, y1), (x2, y2) = _batches(2)
    fresh = weight_relevances(net, x2, y2, _composite())
    for reset in (False, True):
        tracker = RelevanceTracker(_composite(), alpha=0.5, reset_each_epoch=reset)
        tracker.update(net, q, x1, y1)
        tracker.start_epoch()
        r = tracker.update(net, q, x2, y2)["4.weight"]
        assert torch.allclose(r, fresh["4.weight"]) == reset


def _zero_weight_relevance(source_name, lr=1e-3):
    """Relevances of one step from ``source_name``'s network, and which weights are zero."""
    net = _small_net()
    source = make_source(source_name, net, lr)
    q = ModelQuantizer(net, bits=2, Lambda=0.05)
    x, y = _batches(1)[0]
    torch.nn.functional.cross_entropy(net(x), y).backward()
    tracker = RelevanceTracker(_composite(), source=source)
    relevances = tracker.update(net, q, x, y)
    zero = {n: (s.indices == s.grid.zero_index).view_as(s.shadow) for n, s in q.layers.items()}
    return net, q, relevances, zero


def test_quantized_source_gives_zero_weights_no_relevance():
    _, _, relevances, zero = _zero_weight_relevance("quantized")
    assert all(relevances[n][zero[n]].abs().max() == 0 for n in zero)


def test_shadow_source_gives_zero_weights_relevance_and_restores_the_network():
    net, q, relevances, zero = _zero_weight_relevance("shadow")
    assert all(relevances[n][zero[n]].abs().max() > 0 for n in zero)
    params = dict(net.named_parameters())
    for name, state in q.layers.items():                      # still the quantized weights
        centroids = state.grid.centroids()[state.indices].view_as(state.shadow)
        assert torch.equal(params[name].detach(), centroids)


def test_stepped_source_moves_zero_weights_by_about_lr():
    net, q, relevances, zero = _zero_weight_relevance("stepped", lr=1e-3)
    params = dict(net.named_parameters())
    for name in q.names:
        moved = params[name].detach()[zero[name]].abs()
        assert moved.max() <= 1.001e-3 and moved.max() > 0.9e-3    # Adam's first step: lr
        assert relevances[name][zero[name]].abs().max() > 0
    q.quantize()                                                     # back on the grid
    for name, state in q.layers.items():
        assert torch.isin(params[name].detach().flatten(), state.grid.centroids()).all()
    with pytest.raises(ValueError, match="learning rate"):
        make_source("stepped", net, None)


def test_pretrained_source_uses_the_network_before_quantization():
    net = _small_net()
    pretrained = _small_net()
    source = make_source("pretrained", net)
    q = ModelQuantizer(net, bits=2, Lambda=0.05)
    x, y = _batches(1)[0]
    r = RelevanceTracker(_composite(), source=source).update(net, q, x, y)
    expected = weight_relevances(pretrained, x, y, _composite())
    quantized = weight_relevances(net, x, y, _composite())
    assert all(torch.allclose(r[n], expected[n]) for n in q.names)
    assert not torch.allclose(r["4.weight"], quantized["4.weight"])
    with pytest.raises(ValueError, match="before quantization"):
        make_source("pretrained")
    with pytest.raises(ValueError, match="unknown relevance source"):
        make_source("teacher")


def test_beta_is_capped():
    torch.manual_seed(3)
    w = torch.randn(3000) * 0.05
    grid = make_grid(w, 4)
    info = information_content(cluster_probabilities(w, grid))
    relevance = torch.rand(3000) ** 0.2           # mean ~0.83: beta starts near 3.7
    _, free, _ = relevance_assign(w, grid, 1e-4, info, relevance, 0.1)
    _, capped, _ = relevance_assign(w, grid, 1e-4, info, relevance, 0.1, beta_max=1.0)
    assert free > 1.0 and capped <= 1.0


def test_official_lambda_max_form_hand_computed():
    w = torch.tensor([0.0, 0.1, 1.0, 1.4, -1.0, 0.0])
    info = information_content(cluster_probabilities(w, HAND_GRID))
    # nearest counts -1:1, 0:3, 1:2: I = log2 6, 1, log2 3, inf
    assert info[:3].tolist() == pytest.approx([math.log2(6), 1.0, math.log2(3)])
    gain_pos, gain_neg = math.log2(3) - 1, math.log2(6) - 1
    assert lambda_max(w, HAND_GRID, info) == pytest.approx((1.4 ** 2 - 0.4 ** 2) / gain_pos)
    official = max(((1 - 1.4) ** 2 + 1.4) ** 2 / gain_pos, ((-1 + 1) ** 2 - 1) ** 2 / gain_neg)
    assert lambda_max_official(w, HAND_GRID, info) == pytest.approx(official)
    assert LAMBDA_MAX["official"] is lambda_max_official
    assert ModelQuantizer(_small_net(), lambda_max="official").lambda_max is lambda_max_official


def test_signed_straight_through_scale():
    grid = Grid(0.5, -2, 1)                        # centroids -1, -0.5, 0, 0.5
    grad, indices = torch.ones(4), torch.tensor([0, 1, 2, 3])
    assert shadow_gradient(grad, indices, grid, "signed").tolist() == [-1.0, -0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="straight-through"):
        shadow_gradient(grad, indices, grid, "absolute")


def test_quantizer_refuses_unknown_options():
    for options, message in (({"relevance_on": "zero"}, "relevance_on"),
                             ({"lambda_max": "paper"}, "lambda_max"),
                             ({"ste": "sign"}, "straight-through"), ({"beta_max": 0.0}, "beta_max")):
        with pytest.raises(ValueError, match=message):
            ModelQuantizer(_small_net(), **options)


def test_protocols_fill_unset_settings_and_flags_win():
    unset = {"lr": None, "epochs": None, "max_batches": None, "relevance_source": None,
             "relevance_reset": None, "beta_max": None, "lambda_max": None, "relevance_on": None,
             "ecq_warmup_steps": None, "lrp_every": None, "Lambda": 0.1}
    official = resolve(unset, "official", lrp=True)
    assert (official["lr"], official["epochs"], official["max_batches"]) == (1e-3, 10, 0)
    assert (official["relevance_source"], official["relevance_reset"], official["beta_max"],
            official["lambda_max"]) == ("stepped", "epoch", 1.0, "official")
    assert (official["relevance_on"], official["ecq_warmup_steps"], official["lrp_every"]) == ("all", 0, 1)
    ours = resolve({**unset, "lr": 5e-4, "lrp_every": 4}, "ours", lrp=True)
    assert (ours["lr"], ours["lrp_every"], ours["max_batches"], ours["beta_max"]) == (5e-4, 4, 200, math.inf)
    assert ours["Lambda"] == 0.1 and PROTOCOLS["ours"].relevance_source == "quantized"
    ecq = resolve(unset, "official", lrp=False)             # unused ECQx settings are no error
    assert ecq["lr"] == 1e-3
    with pytest.raises(ProtocolError, match="--relevance_on, --lrp_every only act"):
        resolve({**unset, "relevance_on": "nonzero", "lrp_every": 2}, "ours", lrp=False)
    with pytest.raises(ProtocolError, match="unknown protocol"):
        resolve(unset, "paper", lrp=True)
