"""Entropy-constrained trained quantization (ECQ) and its explainability-driven variant
ECQx (Becking et al., "ECQx: Explainability-Driven Quantization for Low-Bit and Sparse
DNNs", xxAI, LNAI 13200, 2022).

* :mod:`ecqx.grid` - the fixed per-layer centroid grid,
* :mod:`ecqx.assign` - the entropy-constrained assignment of weights to centroids and its
  relevance-adjusted (ECQx) form with the sparsity-bounded search of the exponent beta,
* :mod:`ecqx.ste` - the straight-through gradient of the quantized weights,
* :mod:`ecqx.quantizer` - shadow weights, grids and assignments of a whole network,
* :mod:`ecqx.size` - the network's real size as one NNC bitstream,
* :mod:`ecqx.relevance`, :mod:`ecqx.composites` - LRP weight relevances with zennit,
* :mod:`ecqx.sources` - the network the relevances are computed on,
* :mod:`ecqx.train` - one training epoch (ECQ, or ECQx with smoothed relevances),
* :mod:`ecqx.protocol` - the training protocols: ours and the official release's.
"""
from .assign import (assign, assignment_costs, cluster_probabilities, information_content,
                     lambda_max, layer_lambda, relevance_assign)
from .grid import Grid, make_grid
from .ste import shadow_gradient

__all__ = ["Grid", "make_grid", "assign", "assignment_costs", "cluster_probabilities",
           "information_content", "lambda_max", "layer_lambda", "relevance_assign",
           "shadow_gradient"]
