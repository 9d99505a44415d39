"""LRP weight relevances (ecqx.relevance) against a hand computation, conservation, and the
composite/canonizer registry."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecqx.composites import COMPOSITES, make_composite
from ecqx.relevance import weight_relevances


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)).double().eval()


def _epsilon_everywhere():
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Pass
    from zennit.types import Activation
    return LayerMapComposite([(Activation, Pass()), (nn.Linear, Epsilon(epsilon=1e-12))])


def test_epsilon_weight_relevance_matches_hand_computation():
    net = _mlp()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    rel = weight_relevances(net, x, y, _epsilon_everywhere(), epsilon=1e-12)
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    with torch.no_grad():
        z1 = x @ w1.T
        h = z1.relu()
        z2 = h @ w2.T
        r2 = z2 * F.one_hot(y, 3)
        s2 = r2 / z2
        rw2 = w2 * (s2.T @ h)                  # R_ij = w_ij sum a_j R_i / z_i
        rh = h * (s2 @ w2)
        s1 = rh / z1.where(z1 != 0, torch.ones_like(z1))
        rw1 = w1 * (s1.T @ x)
    assert torch.allclose(rel["2.weight"], rw2, rtol=1e-9, atol=1e-12)
    assert torch.allclose(rel["0.weight"], rw1, rtol=1e-6, atol=1e-9)
    # conservation: without biases every layer's weights carry the whole relevance
    total = r2.sum()
    assert rel["2.weight"].sum().item() == pytest.approx(total.item(), rel=1e-9)
    assert rel["0.weight"].sum().item() == pytest.approx(total.item(), rel=1e-6)


def test_model_is_left_untouched():
    net = _mlp().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight_relevances(net, torch.randn(2, 6, dtype=torch.float64), torch.tensor([0, 1]),
                      make_composite("epsilon_plus_flat_bn_pass"))
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("name", COMPOSITES)
def test_cifar_resnet_relevances_for_every_weight(name):
    import models
    net = models.create_model("resnet20", num_classes=10, in_chans=1).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with torch.no_grad():
        before = net(x)
    rel = weight_relevances(net, x, y, make_composite(name, "resnetcifar"))
    weights = {n: p for n, p in net.named_parameters() if p.dim() > 1}
    assert set(rel) == set(weights)
    assert all(rel[n].shape == p.shape and torch.isfinite(rel[n]).all() for n, p in weights.items())
    with torch.no_grad():               # the canonizer is gone again: same forward pass
        assert torch.equal(net(x), before)


def test_unknown_names():
    with pytest.raises(ValueError, match="composite"):
        make_composite("epsilon_everything")
    with pytest.raises(ValueError, match="canonizer"):
        make_composite("epsilon_plus_flat", "mobilenetv9")


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])
def test_mobilenet_canonizer(arch):
    import models
    from ecqx.composites import auto_canonizer
    net = models.create_model(arch, num_classes=10, pretrained=False).eval()
    assert auto_canonizer(net) == "mobilenet"
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([3, 7])
    with torch.no_grad():
        before = net(x)
    rel = weight_relevances(net, x, y, make_composite("epsilon_plus_flat_bn_pass", "mobilenet"))
    convs = {n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(rel) == {f"{n}.weight" for n in convs}
    assert all(torch.isfinite(r).all() for r in rel.values())
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_auto_canonizer_by_architecture():
    import models
    from ecqx.composites import auto_canonizer
    assert auto_canonizer(models.create_model("resnet20", num_classes=10)) == "resnetcifar"
    assert auto_canonizer(models.create_model("resnet18", num_classes=10, pretrained=False)) == "resnet"
    assert auto_canonizer(models.create_model("vgg11", num_classes=10, pretrained=False)) == "vgg"
    assert auto_canonizer(torch.nn.Sequential(torch.nn.Linear(3, 2))) == "none"
