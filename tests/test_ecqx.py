"""ECQ/ECQx equations on hand-computed examples (ecqx.grid, ecqx.assign, ecqx.ste)."""
import math

import pytest
import torch

from ecqx import (Grid, assign, assignment_costs, cluster_probabilities, information_content,
                  lambda_max, layer_lambda, make_grid, relevance_assign, shadow_gradient)
from ecqx.assign import sparsity

HAND_GRID = Grid(1.0, -1, 2)                       # centroids -1, 0, 1, 2
HAND_W = torch.tensor([0.0, 0.1, 1.0, 1.2, 2.0, -1.0])


def test_signed_grid_levels_and_step():
    w = torch.linspace(-1, 1, 1001)
    q = torch.quantile(w.abs(), 0.999).item()
    grid = make_grid(w, bits=3)
    assert (grid.low, grid.high) == (-4, 3) and grid.size == 8   # ties: negative side
    assert grid.step == pytest.approx(q / 3)
    assert grid.centroids()[grid.zero_index] == 0


def test_extra_level_goes_to_the_heavier_side():
    w = torch.cat([torch.linspace(0, 2, 1000), -torch.linspace(0, 1, 100)])
    grid = make_grid(w, bits=3)
    assert (grid.low, grid.high) == (-3, 4)


def test_unsigned_grid_for_non_negative_layers():
    w = torch.rand(5000)
    grid = make_grid(w, bits=2)
    assert (grid.low, grid.high) == (0, 3)
    assert grid.step == pytest.approx(torch.quantile(w, 0.999).item() / 3)


def test_grid_ignores_outliers():
    w = torch.cat([torch.randn(100000) * 0.01, torch.tensor([5.0])])
    assert make_grid(w, bits=4).step < 0.01


def test_cluster_probabilities_with_zero_bias():
    p = cluster_probabilities(HAND_W, HAND_GRID)
    # nearest counts -1:1, 0:2, 1:2, 2:1; zero raised to 1/2, the others times 0.5 / (4/6)
    assert p.tolist() == pytest.approx([0.125, 0.5, 0.25, 0.125])
    assert information_content(p).tolist() == pytest.approx([3.0, 1.0, 2.0, 3.0])


def test_empty_cluster_is_never_chosen():
    p = cluster_probabilities(torch.tensor([0.0, 0.0, 1.0]), HAND_GRID)
    info = information_content(p)
    assert math.isinf(info[0]) and math.isinf(info[3])
    assert set(assign(torch.tensor([-1.0, 2.0]), HAND_GRID, 0.0, info).tolist()) <= {1, 2}


def test_assignment_cost_hand_computed():
    info = torch.tensor([3.0, 1.0, 2.0, 3.0])
    costs = assignment_costs(torch.tensor([0.6]), HAND_GRID, 0.1, info)[0]
    assert costs.tolist() == pytest.approx([2.56 + 0.3, 0.36 + 0.1, 0.16 + 0.2, 1.96 + 0.3])
    assert assign(torch.tensor([0.6]), HAND_GRID, 0.1, info).item() == 2      # centroid 1
    assert assign(torch.tensor([0.6]), HAND_GRID, 0.3, info).item() == 1      # zero wins


def test_lambda_max_makes_zero_as_cheap_as_the_extreme_centroid():
    info = information_content(cluster_probabilities(HAND_W, HAND_GRID))
    lam = lambda_max(HAND_W, HAND_GRID, info)
    # w = 2 on centroid 2 (3 bits) against zero (1 bit): (4 - 0) / (3 - 1) = 2; w = -1: 0.5
    assert lam == pytest.approx(2.0)
    costs = assignment_costs(torch.tensor([2.0]), HAND_GRID, lam, info)[0]
    assert costs[3].item() == pytest.approx(costs[HAND_GRID.zero_index].item())
    assert assign(torch.tensor([2.0]), HAND_GRID, 10 * lam, info).item() == HAND_GRID.zero_index


def test_layer_lambda_scales_with_relative_size():
    assert layer_lambda(0.05, 100, 400, 2.0) == pytest.approx(0.05 * 2.0 * 0.30 / 1.05)
    assert layer_lambda(0.05, 400, 400, 2.0) == pytest.approx(0.05 * 2.0)


def test_larger_lambda_gives_more_zeros():
    torch.manual_seed(0)
    w = torch.randn(4000) * 0.05
    grid = make_grid(w, 4)
    info = information_content(cluster_probabilities(w, grid))
    zeros = [sparsity(assign(w, grid, lam, info), grid) for lam in (0.0, 1e-5, 1e-4, 1e-3)]
    assert zeros == sorted(zeros) and zeros[-1] > zeros[0]


@pytest.mark.parametrize("p", [0.02, 0.1])
def test_beta_search_lands_in_the_sparsity_window(p):
    torch.manual_seed(1)
    w = torch.randn(6000) * 0.05
    grid = make_grid(w, 4)
    info = information_content(cluster_probabilities(w, grid))
    lam = layer_lambda(0.1, w.numel(), w.numel(), lambda_max(w, grid, info))
    relevance = torch.rand(6000) ** 3
    target = sparsity(assign(w, grid, lam, info), grid)
    indices, beta, converged = relevance_assign(w, grid, lam, info, relevance, p)
    assert converged and beta > 0
    assert target - p <= sparsity(indices, grid) <= target
    # relevant weights are zeroed less often than irrelevant ones
    zero = indices == grid.zero_index
    top = relevance > relevance.quantile(0.9)
    low = relevance < relevance.quantile(0.1)
    assert zero[top].float().mean() < zero[low].float().mean()


def test_without_relevance_ecqx_is_ecq():
    w = torch.randn(500) * 0.1
    grid = make_grid(w, 3)
    info = information_content(cluster_probabilities(w, grid))
    indices, _, _ = relevance_assign(w, grid, 1e-3, info, torch.zeros(500), 0.1)
    assert torch.equal(indices, assign(w, grid, 1e-3, info))


def test_shadow_gradient_scales_by_centroid_magnitude():
    grid = Grid(0.5, -2, 1)                        # centroids -1, -0.5, 0, 0.5
    grad = torch.tensor([1.0, 1.0, 1.0, 1.0])
    indices = torch.tensor([0, 1, 2, 3])
    assert shadow_gradient(grad, indices, grid).tolist() == [1.0, 0.5, 1.0, 0.5]


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))


def test_quantized_weights_take_only_grid_values():
    from ecqx.quantizer import ModelQuantizer
    net = _small_net()
    q = ModelQuantizer(net, bits=3, Lambda=0.05)
    assert q.names == ["0.weight", "4.weight"]
    for name, state in q.layers.items():
        w = dict(net.named_parameters())[name].detach()
        allowed = state.grid.centroids()
        assert torch.isin(w.flatten(), allowed).all(), name
        assert torch.equal(q.levels()[name].float() * state.grid.step, w)


def test_stronger_lambda_gives_sparser_networks():
    from ecqx.quantizer import ModelQuantizer
    zeros = [ModelQuantizer(_small_net(), bits=4, Lambda=lam).sparsity() for lam in (0.0, 0.05, 0.5)]
    assert zeros[0] < zeros[1] < zeros[2]


def test_straight_through_training_step_moves_shadows():
    from ecqx.quantizer import ModelQuantizer
    net = _small_net()
    q = ModelQuantizer(net, bits=4, Lambda=0.02)
    before = [s.clone() for s in q.shadow_parameters()]
    opt = torch.optim.SGD(q.shadow_parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    q.transfer_gradients()
    opt.step()
    q.quantize()
    assert any(not torch.equal(a, b) for a, b in zip(before, q.shadow_parameters()))


def test_size_report_is_the_bitstream_and_restores_exactly():
    from ecqx.quantizer import ModelQuantizer
    from ecqx.size import compressed_bitstream, restore
    net = _small_net().eval()
    q = ModelQuantizer(net, bits=4, Lambda=0.1)
    bs = compressed_bitstream(net, q)
    restored = restore(_small_net().eval(), q.names, bs)
    for name in q.names:
        assert torch.equal(dict(restored.named_parameters())[name], dict(net.named_parameters())[name])
    dense = sum(v.numel() * 4 for k, v in net.state_dict().items() if "num_batches" not in k)
    assert 0 < len(bs) < dense / 4


@pytest.mark.parametrize("use_lrp", [False, True])
def test_training_epoch_learns_and_stays_on_the_grid(use_lrp):
    from ecqx.composites import make_composite
    from ecqx.quantizer import ModelQuantizer
    from ecqx.train import RelevanceTracker, make_optimizers, train_epoch
    torch.manual_seed(0)
    teacher = _small_net().eval()
    data = []
    for _ in range(12):
        x = torch.randn(32, 1, 8, 8)
        with torch.no_grad():
            data.append((x, teacher(x).argmax(1)))
    net = _small_net()
    with torch.no_grad():                       # start away from the teacher
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    q = ModelQuantizer(net, bits=4, Lambda=0.02)
    opts = make_optimizers(net, q, lr=3e-3)
    tracker = RelevanceTracker(make_composite("epsilon_plus_flat_bn_pass")) if use_lrp else None
    first = train_epoch(net, q, data, opts, "cpu", relevance=tracker, verbose=False)
    for _ in range(3):
        last = train_epoch(net, q, data, opts, "cpu", relevance=tracker, verbose=False)
    assert last < first
    params = dict(net.named_parameters())
    for name, state in q.layers.items():
        assert torch.isin(params[name].detach().flatten(), state.grid.centroids()).all()
    if use_lrp:
        assert set(tracker.smoothed) == set(q.names) and all(s.beta > 0 for s in q.layers.values())
