"""compress/: sparsity and pruning schedules on hand-computed values, magnitude and RB masks,
filter-importance criteria on hand-made layers, channel groups through residual additions,
and the pruned (smaller, dense) network computing exactly what the masked one did."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress import CompressionConfig, ConfigError, Context, apply_config, compression_loss, finalize
from compress.channels import channel_groups
from compress.layers import quantized_layers
from compress.pruning import filter_importance
from compress.schedules import make_schedule
from compress.sparsity import RBMask, magnitude_masks

CPU = torch.device("cpu")


def schedule(kind, **kw):
    return make_schedule(kind, where="test", **{"init": 0.1, "target": 0.5, "target_epoch": 4, **kw})


# ----------------------------------------------------------------------------- schedules

def test_polynomial_schedule():
    concave = schedule("polynomial", power=2.0)
    # target - (target - init) * (1 - e/4)^2
    assert [concave.level(e) for e in range(6)] == pytest.approx(
        [0.1, 0.5 - 0.4 * 0.75 ** 2, 0.5 - 0.4 * 0.25, 0.5 - 0.4 * 0.25 ** 2, 0.5, 0.5])
    convex = schedule("polynomial", power=2.0, concave=False)
    assert convex.level(1) == pytest.approx(0.1 + 0.4 / 16) and convex.level(4) == pytest.approx(0.5)


def test_exponential_schedule_keeps_a_geometric_share():
    s = schedule("exponential")
    kept = [1 - s.level(e) for e in range(5)]
    assert kept[0] == pytest.approx(0.9) and kept[4] == pytest.approx(0.5)
    ratios = [kept[i + 1] / kept[i] for i in range(4)]
    assert ratios == pytest.approx([(0.5 / 0.9) ** 0.25] * 4)


def test_multistep_and_baseline_schedules():
    s = schedule("multistep", steps=[2, 5], levels=[0.2, 0.4, 0.6])
    assert [s.level(e) for e in range(7)] == [0.2, 0.2, 0.4, 0.4, 0.4, 0.6, 0.6]
    b = make_schedule("baseline", init=0.0, target=0.4, target_epoch=0, start_epoch=2, where="t")
    assert [b.level(e) for e in range(4)] == [0.0, 0.0, 0.4, 0.4]


@pytest.mark.parametrize("kw, match", [({"target": 1.0}, "target level"),
                                       ({"power": 0}, "power"),
                                       ({"kind": "adaptive"}, "unknown")])
def test_bad_schedules(kw, match):
    kind = kw.pop("kind", "polynomial")
    with pytest.raises(ConfigError, match=match):
        schedule(kind, **kw)
    with pytest.raises(ConfigError, match="one level more"):
        schedule("multistep", steps=[1, 2], levels=[0.1, 0.2])


# ----------------------------------------------------------------------------- magnitude

def test_magnitude_masks_global_and_local():
    a = torch.tensor([[1.0, -2.0], [3.0, -4.0]])          # norm sqrt(30)
    b = torch.tensor([0.1, 0.2, 0.3, 0.4])                 # norm sqrt(0.3)
    local = magnitude_masks([a, b], 0.5, "abs", "local")
    assert local[0].tolist() == [[0, 0], [1, 1]] and local[1].tolist() == [0, 0, 1, 1]
    # by |w| over both tensors the four smallest are all of b
    assert magnitude_masks([a, b], 0.5, "abs", "global")[1].tolist() == [0, 0, 0, 0]
    # normalised, both tensors have the same relative magnitudes: two zeros in each
    normed = magnitude_masks([a, b], 0.5, "normed_abs", "global")
    assert normed[0].sum() == 2 and normed[1].sum() == 2


class Net(nn.Module):
    """conv-BN-ReLU, two convolutions added (a residual join), pooled and flattened
    with 2x2 features per channel into a linear layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.a = nn.Conv2d(6, 8, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 1)
        self.bn_a = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.bn_a(self.a(x)) + self.b(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1))


def net():
    torch.manual_seed(0)
    model = Net()
    for bn in (model.bn, model.bn_a):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def batches(n=3):
    torch.manual_seed(1)
    return [(torch.randn(4, 2, 8, 8), torch.randint(0, 3, (4,))) for _ in range(n)]


def context():
    return Context(batches(), CPU, F.cross_entropy, verbose=False)


def apply(model, *sections):
    return apply_config(model, CompressionConfig({"compression": list(sections)}), context())


def test_magnitude_sparsity_masks_zero_gradient_and_finalize():
    model = net()
    algorithm, = apply(model, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5,
                               "params": {"sparsity_level_setting_mode": "local"}})
    x = torch.randn(2, 2, 8, 8)
    model(x).sum().backward()
    for layer in (model.stem, model.a, model.fc):
        original = layer.parametrizations.weight.original
        mask = layer.parametrizations.weight[0].mask
        assert mask.sum() == original.numel() - int(0.5 * original.numel())
        assert torch.all(original.grad[mask == 0] == 0)          # masked weights learn nothing
    finalize(model, [algorithm])
    assert type(model.stem) is nn.Conv2d                          # a plain layer again
    assert int((model.stem.weight == 0).sum()) == int(0.5 * model.stem.weight.numel())
    rows = {r["layer"]: r["sparsity"] for r in algorithm.layer_report(model)}
    assert set(rows) == {"stem", "a", "b", "fc"} and rows["fc"] == pytest.approx(0.5)


def test_sparsity_then_quantization_keeps_zeros_through_folding():
    model = net()
    sparsity, quantization = apply(
        model, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.6},
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}}})
    finalize(model, [sparsity, quantization])
    layer = quantized_layers(model)["a"]
    assert torch.all(layer.weight_quantizer.integers(layer.layer.weight)[layer.layer.weight == 0] == 0)
    assert float((layer.layer.weight == 0).float().mean()) > 0.3


def test_schedule_raises_the_level_until_the_freeze_epoch():
    model = net()
    algorithm, = apply(model, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.2,
                               "params": {"schedule": "multistep", "multistep_steps": [1, 3],
                                          "multistep_sparsity_levels": [0.2, 0.4, 0.8],
                                          "sparsity_freeze_epoch": 2}})
    zeros = []
    for epoch in range(4):
        algorithm.epoch_start(model, epoch, None)
        zeros.append(sum(int((l.weight == 0).sum()) for l in algorithm.layers.values()))
    total = sum(l.weight.numel() for l in algorithm.layers.values())
    assert zeros[0] == int(0.2 * total) and zeros[1] == zeros[2] == zeros[3] == int(0.4 * total)


# ----------------------------------------------------------------------------- RB

def test_rb_mask_samples_its_keep_probability_and_evaluates_deterministically():
    torch.manual_seed(0)
    mask = RBMask(torch.ones(20000), init_logit=1.0, speed=4.0)
    with torch.no_grad():
        mask.scaled_logits[:10000] = -0.5                       # logit -2
    mask.train()
    kept = torch.stack([mask(torch.ones(20000)) for _ in range(5)]).mean(0)
    assert kept[:10000].mean().item() == pytest.approx(1 / (1 + math.exp(2)), abs=0.01)
    assert kept[10000:].mean().item() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)
    mask.eval()
    assert mask(torch.ones(20000)).tolist() == [0.0] * 10000 + [1.0] * 10000


def test_rb_loss_pulls_the_density_to_the_schedule_and_stops_when_frozen():
    model = net()
    algorithm, = apply(model, {"algorithm": "rb_sparsity", "sparsity_init": 0.3,
                               "params": {"mask_init_logit": 2.0, "sparsity_freeze_epoch": 1}})
    assert algorithm.level == pytest.approx(0.3)
    # every logit is 2 > 0: the evaluation mask keeps all, 0.3 too many
    assert compression_loss([algorithm]).item() == pytest.approx(((1 - 0.7) / 0.05) ** 2, rel=1e-5)
    compression_loss([algorithm]).backward()
    grads = [m.scaled_logits.grad for m in algorithm.masks().values()]
    assert all(torch.all(g > 0) for g in grads)                  # descent lowers every logit
    masks = list(algorithm.masks().values())
    with torch.no_grad():                                         # now keep exactly 70 %
        for m in masks:
            m.scaled_logits.copy_(torch.where(torch.rand_like(m.scaled_logits) < 0.7, 1.0, -1.0))
    total = sum(m.scaled_logits.numel() for m in masks)
    kept = sum(int((m.scaled_logits > 0).sum()) for m in masks) / total
    assert compression_loss([algorithm]).item() == pytest.approx(((kept - 0.7) / 0.05) ** 2, rel=1e-4)
    algorithm.epoch_start(model, 1, None)
    assert compression_loss([algorithm]) is None
    assert not any(m.scaled_logits.requires_grad for m in algorithm.masks().values())


def test_sparsity_config_errors():
    with pytest.raises(ConfigError, match="update_per_optimizer_step"):
        CompressionConfig({"compression": {"algorithm": "magnitude_sparsity",
                                           "params": {"update_per_optimizer_step": True}}})
    with pytest.raises(ConfigError, match="unknown key 'sparsity_target_epochs'"):
        CompressionConfig({"compression": {"algorithm": "rb_sparsity",
                                           "params": {"sparsity_target_epochs": 3}}})
    with pytest.raises(ConfigError, match="weight_importance"):
        CompressionConfig({"compression": {"algorithm": "magnitude_sparsity",
                                           "params": {"weight_importance": "l2"}}})
    with pytest.raises(ConfigError, match="cannot be combined with binarization"):
        apply(net(), {"algorithm": "binarization", "initializer": {"batchnorm_adaptation":
                                                                   {"num_bn_adaptation_samples": 0}}},
              {"algorithm": "magnitude_sparsity"})


# ----------------------------------------------------------------------------- pruning

def test_filter_importance_criteria():
    w = torch.tensor([[3.0, -4.0], [1.0, 0.0], [0.0, -2.0]]).reshape(3, 2, 1, 1)
    assert filter_importance(w, "L1").tolist() == [7.0, 1.0, 2.0]
    assert filter_importance(w, "L2").tolist() == pytest.approx([5.0, 1.0, 2.0])
    d01, d02, d12 = math.hypot(2, 4), math.hypot(3, 2), math.hypot(1, 2)
    assert filter_importance(w, "geometric_median").tolist() == pytest.approx(
        [d01 + d02, d01 + d12, d02 + d12])


def test_channel_groups_join_residual_additions():
    groups = {tuple(sorted(g.producers)): g for g in channel_groups(net(), torch.zeros(1, 2, 8, 8))}
    stem, joined, head = groups[("stem",)], groups[("a", "b")], groups[("fc",)]
    assert stem.norms == ["bn"] and sorted(stem.consumers) == [("a", 1), ("b", 1)] and stem.prunable
    assert joined.norms == ["bn_a"] and joined.consumers == [("fc", 4)] and joined.prunable
    assert not head.prunable and "output" in head.fixed


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 1), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


def test_channels_through_unfollowed_operations_are_fixed():
    groups = {g.producers[0]: g for g in channel_groups(Concat(), torch.zeros(1, 2, 4, 4))}
    assert not groups["a"].prunable and "cat" in groups["a"].fixed
    with pytest.raises(ConfigError, match="no prunable channel group"):
        apply(Concat(), {"algorithm": "filter_pruning", "params": {"prune_first_conv": True}})


@pytest.mark.parametrize("criterion", ["L1", "L2", "geometric_median"])
def test_pruned_network_computes_the_masked_network(criterion):
    model = net()
    algorithm, = apply(model, {"algorithm": "filter_pruning", "pruning_init": 0.5,
                               "params": {"schedule": "exponential", "pruning_target": 0.5,
                                          "pruning_steps": 3, "prune_first_conv": True,
                                          "filter_importance": criterion}})
    x = torch.randn(5, 2, 8, 8)
    with torch.no_grad():
        masked = model(x)
    before = sum(p.numel() for p in net().parameters())
    finalize(model, [algorithm])
    with torch.no_grad():
        pruned = model(x)
    assert torch.allclose(pruned, masked, atol=1e-5)
    assert (model.stem.out_channels, model.bn.num_features, model.a.in_channels) == (3, 3, 3)
    assert (model.a.out_channels, model.b.out_channels, model.fc.in_features) == (4, 4, 16)
    assert sum(p.numel() for p in model.parameters()) < 0.4 * before
    assert [r["kept_filters"] for r in algorithm.layer_report(model)] == [3, 4]


def test_pruned_channels_are_the_least_important():
    model = net()
    with torch.no_grad():
        model.stem.weight[[1, 4]] *= 1e-3                      # the two smallest filters
    apply(model, {"algorithm": "filter_pruning",
                  "params": {"schedule": "baseline", "pruning_target": 0.34, "prune_first_conv": True}})
    # one-shot: removed at once; 0.34 * 6 -> 2 filters of stem, 0.34 * 8 -> 2 of the join
    assert model.stem.out_channels == 4 and model.a.out_channels == 6
    assert torch.allclose(model.stem.weight, net().stem.weight[[0, 2, 3, 5]])


def test_pruning_schedule_over_epochs_cannot_be_combined():
    with pytest.raises(ConfigError, match="cannot be combined"):
        CompressionConfig({"compression": [{"algorithm": "filter_pruning"},
                                           {"algorithm": "quantization"}]})
    with pytest.raises(ConfigError, match="must be true"):
        CompressionConfig({"compression": {"algorithm": "filter_pruning", "params": {"zero_grad": False}}})


def test_one_shot_pruning_then_quantization():
    model = net()
    _, quantization = apply(model, {"algorithm": "filter_pruning", "params": {
        "schedule": "baseline", "pruning_target": 0.5, "prune_first_conv": True}},
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}}})
    assert quantized_layers(model)["a"].layer.out_channels == 4
    assert model(torch.randn(2, 2, 8, 8)).shape == (2, 3)
    copy.deepcopy(model)                                          # no parametrization left behind
