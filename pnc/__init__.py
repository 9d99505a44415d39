"""Progressive neural compression for image offloading under deadlines (Wang et al.,
"Progressive Neural Compression for Adaptive Image Offloading under Timing Constraints",
RTSS 2023).

* :mod:`pnc.model` - the tiny encoder, the decoder and stochastic tail-drop,
* :mod:`pnc.train` - the training stages (reconstruction, joint with the classifier, distillation),
* :mod:`pnc.quantize` - latent quantisation (uint8, then 6 bits),
* :mod:`pnc.huffman`, :mod:`pnc.codec` - per-channel static Huffman codes (or DeepCABAC via
  ``nnc_core``), the sender and the receiver,
* :mod:`pnc.packets` - byte-exact packets of at most 64 bytes with one flag byte each,
* :mod:`pnc.link` - bandwidth traces and the per-image byte budgets under a deadline,
* :mod:`pnc.baselines`, :mod:`pnc.offload` - JPEG, progressive JPEG and WebP, and what the
  classifier gets from every method for any byte budget.
"""
from .model import PNC, PNCConfig, PRESETS, drop_tail, sample_kept_channels

__all__ = ["PNC", "PNCConfig", "PRESETS", "drop_tail", "sample_kept_channels"]
