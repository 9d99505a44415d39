"""The compression algorithms of NNCF (Intel's Neural Network Compression Framework; Kozlov
et al., "Neural Network Compression Framework for fast model inference", 2020), written
here in the framework of the NNC codec: fake quantization (post-training and
quantization-aware, mixed precision), binarization, driven by NNCF-style JSON configs,
exported to ONNX with standard operators, and the integer weights coded losslessly by NNC
so that the file that is saved is the small one.

    config = load_config("configs/fmnist_resnet20_int8.json")
    algorithms = apply_config(model, config, Context(calibration_loader, device, loss))
    export_onnx(model, sample, "model.onnx")
    Path("model.nnc").write_bytes(encode_integer_state(integer_state(model)))
"""
from .base import CompressionAlgorithm, Context
from .config import ALGORITHMS, CompressionConfig, ConfigError, load_config, register_algorithm
from . import quantization  # noqa: F401  (registers "quantization")
from . import binarization  # noqa: F401  (registers "binarization")

__all__ = ["CompressionAlgorithm", "Context", "ALGORITHMS", "CompressionConfig", "ConfigError",
           "load_config", "register_algorithm", "apply_config"]


def apply_config(model, config: CompressionConfig, context: Context) -> list[CompressionAlgorithm]:
    """Apply the config's algorithms to ``model`` in place, in order; returns them (their
    ``epoch_start`` drives fine-tuning schedules, ``layer_report`` the per-layer summary)."""
    for algorithm in config.algorithms:
        algorithm.apply(model, context)
    return config.algorithms
