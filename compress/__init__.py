"""The compression algorithms of NNCF (Intel's Neural Network Compression Framework; Kozlov
et al., "Neural Network Compression Framework for fast model inference", 2020), written
here in the framework of the NNC codec: fake quantization (post-training and
quantization-aware, mixed precision), binarization, magnitude and RB sparsity, filter
pruning that really removes the filters, driven by NNCF-style JSON configs,
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
from . import sparsity  # noqa: F401  (registers "magnitude_sparsity", "rb_sparsity")
from . import pruning  # noqa: F401  (registers "filter_pruning")

__all__ = ["CompressionAlgorithm", "Context", "ALGORITHMS", "CompressionConfig", "ConfigError",
           "load_config", "register_algorithm", "apply_config", "finalize", "compression_loss"]


def apply_config(model, config: CompressionConfig, context: Context) -> list[CompressionAlgorithm]:
    """Apply the config's algorithms to ``model`` in place, in order; returns them (their
    ``epoch_start`` drives fine-tuning schedules, ``loss`` adds to the task loss,
    ``finalize`` ends compression (:func:`finalize`), ``layer_report`` the per-layer
    summary)."""
    for algorithm in config.algorithms:
        algorithm.apply(model, context)
    return config.algorithms


def finalize(model, algorithms: list[CompressionAlgorithm]) -> None:
    """Make every algorithm's result permanent (masks multiplied in, pruned filters removed),
    once fine-tuning is over and before the model is saved or exported."""
    for algorithm in algorithms:
        algorithm.finalize(model)


def compression_loss(algorithms: list[CompressionAlgorithm]):
    """The sum of the algorithms' loss terms (None if none has one)."""
    terms = [t for t in (a.loss() for a in algorithms) if t is not None]
    return sum(terms) if terms else None
