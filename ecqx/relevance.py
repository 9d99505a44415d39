"""LRP relevances of the weights, for ECQx (Becking et al. 2022, Sec. 3.2), with stock zennit.

Layer-wise relevance propagation (Bach et al. 2015) redistributes the target-class output of
a network backwards, layer by layer. A convolution or linear layer ``z_i = sum_j w_ij a_j + b_i``
that receives relevance ``R_i`` at its output passes on ``R_j = sum_i a_j w_ij R_i / z_i``
(epsilon rule, ``z`` stabilised); the term inside the sum is the relevance flowing *through*
the weight, and ECQx sums it over the batch (and the positions of a convolution):

    R_ij = w_ij * sum a_j R_i / stab(z_i)          (epsilon weight rule)

zennit's composites assign the rules that propagate relevance between layers (z+ for
convolutions, epsilon for dense layers, flat for the first layer, pass through BatchNorm
and activations). Under a composite the gradient that arrives at a layer's output is that
layer's output relevance ``R``, but parameter gradients stay plain (``R a^T``, without the
division by ``z``), so the weight relevance above is computed here from the stored layer
input and the relevance captured at the layer output: one weight-gradient product per layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def _affine(module, a, weight, bias=None):
    """The layer's affine map of input ``a`` with the given weight and bias."""
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, bias)
    if module.padding_mode != "zeros":
        raise NotImplementedError("weight relevances need zero-padded convolutions")
    return _CONV[type(module)](a, weight, bias, module.stride, module.padding, module.dilation,
                               module.groups)


def _weight_product(module, a, s):
    """``d <z(a, W), s> / dW`` (the layer is linear in W): the sum of ``s_i a_j`` over the batch."""
    probe = torch.zeros_like(module.weight, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_affine(module, a, probe), probe, s)
    return grad


def layer_weight_relevance(module, a, relevance, rule: str = "epsilon", epsilon: float = 1e-6,
                           alpha: float = 2.0, beta: float = 1.0) -> torch.Tensor:
    """Relevance of every weight of ``module`` for input ``a`` and output relevance
    ``relevance``: ``"epsilon"`` as above, or ``"alpha_beta"`` / ``"zplus"`` (alpha 1, beta 0),
    which split positive and negative contributions ``z+`` and ``z-`` the way the rule splits
    the relevance: ``R_w = alpha w+ a+ R/z+ ... - beta w- a+ R/z- ...``."""
    from zennit.core import stabilize
    w = module.weight.detach()
    b = module.bias.detach() if module.bias is not None else None
    if rule == "epsilon":
        return w * _weight_product(module, a, relevance / stabilize(_affine(module, a, w, b), epsilon))
    if rule == "zplus":
        alpha, beta = 1.0, 0.0
    elif rule != "alpha_beta":
        raise ValueError(f"unknown weight rule {rule!r} (epsilon, zplus, alpha_beta)")
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
    b_pos = b.clamp(min=0) if b is not None else None
    b_neg = b.clamp(max=0) if b is not None else None
    z_pos = _affine(module, a_pos, w_pos, b_pos) + _affine(module, a_neg, w_neg)
    s_pos = relevance / stabilize(z_pos, epsilon)
    out = alpha * (w_pos * _weight_product(module, a_pos, s_pos) + w_neg * _weight_product(module, a_neg, s_pos))
    if beta:
        z_neg = _affine(module, a_pos, w_neg, b_neg) + _affine(module, a_neg, w_pos)
        s_neg = relevance / stabilize(z_neg, epsilon)
        out = out - beta * (w_neg * _weight_product(module, a_pos, s_neg)
                            + w_pos * _weight_product(module, a_neg, s_neg))
    return out


def output_relevance(output: torch.Tensor, targets: torch.Tensor, mode: str = "output") -> torch.Tensor:
    """The relevance LRP starts from: the target class's logit (``"output"``), a one
    (``"ones"``) or its probability (``"probability"``), zero for every other class."""
    if output.dim() == 4:          # segmentation: per pixel, class axis 1
        onehot = F.one_hot(targets.clamp(0, output.shape[1] - 1), output.shape[1]).permute(0, 3, 1, 2)
        onehot = onehot * (targets != 255)[:, None]
    else:
        onehot = F.one_hot(targets, output.shape[-1])
    onehot = onehot.to(output)
    start = {"output": output, "ones": torch.ones_like(output),
             "probability": output.softmax(1)}.get(mode)
    if start is None:
        raise ValueError(f"unknown LRP output {mode!r} (output, ones, probability)")
    return start * onehot


@torch.no_grad()
def weight_relevances(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, composite,
                      rule: str = "epsilon", start: str = "output", epsilon: float = 1e-6) -> dict:
    """``{parameter name: relevance}`` of every convolution and linear weight, summed over
    the batch, under a zennit ``composite`` (with its canonizers). The model is left as it
    was: parameters, gradients and train/eval mode."""
    names = {m: f"{n}.weight" for n, m in model.named_modules() if isinstance(m, SCALED)}
    relevances: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()                                   # LRP reads the BatchNorm statistics
    handles = []

    def capture(module, args, output):
        a = args[0].detach()

        def at_output(relevance):
            r = layer_weight_relevance(module, a, relevance.detach(), rule, epsilon)
            relevances[names[module]] = relevances.get(names[module], 0) + r
        if output.requires_grad:
            output.register_hook(at_output)
    try:
        with composite.context(model) as modified:
            handles = [m.register_forward_hook(capture) for m in names]
            with torch.enable_grad():
                x = inputs.detach().clone().requires_grad_()
                out = modified(x)
                out = out["out"] if isinstance(out, dict) else out
                torch.autograd.grad(out, x, output_relevance(out, targets, start).detach())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return relevances
