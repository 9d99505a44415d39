"""ONNX export of a compressed model with standard operators only, so that onnxruntime runs
it: fake quantizers become QuantizeLinear/DequantizeLinear pairs, and every weight's pair is
then folded into an integer initializer feeding a DequantizeLinear, so that the file holds
8-bit weights (4-bit and binary levels in 8-bit containers) instead of float32 ones.

:class:`OnnxModel` runs the file in onnxruntime behind a module's interface, for the same
evaluation loops as PyTorch models; :func:`latency_ms` times one inference.
"""
from __future__ import annotations

import contextlib
import copy
import io
import time
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["export_onnx", "integer_weights", "onnx_session", "OnnxModel", "latency_ms", "OPSET"]

OPSET = 17


@contextlib.contextmanager
def _standard_ops(model):
    from .layers import quantized_layers
    quantizers = [m for m in model.modules() if hasattr(m, "set_standard_ops")]
    weights = {id(l.weight_quantizer): l.layer.weight for l in quantized_layers(model).values()}
    for q in quantizers:
        q.set_standard_ops(True, constant=weights.get(id(q)))
    try:
        yield
    finally:
        for q in quantizers:
            q.set_standard_ops(False)


def export_onnx(model: torch.nn.Module, sample: torch.Tensor, path: str | Path) -> Path:
    """Write (a copy of) ``model``, in eval mode on the CPU, as ONNX with a dynamic batch
    dimension; quantized weights are stored as integers (:func:`integer_weights`)."""
    import onnx

    path = Path(path)
    model = copy.deepcopy(model).eval().cpu()         # the caller's model stays as it is
    quantized = any(hasattr(m, "set_standard_ops") for m in model.modules())
    buffer = io.BytesIO()
    # the TorchScript exporter: torch.export cannot trace fake quantization with a dynamic
    # batch. Constant folding would turn the weights' QuantizeLinear back into float32
    # weights, so it runs only for a float model (where it folds BatchNorm).
    with _standard_ops(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample.cpu(),), buffer, dynamo=False, opset_version=OPSET,
                          do_constant_folding=not quantized,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    graph = integer_weights(onnx.load_from_string(buffer.getvalue()))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def _constants(graph) -> dict:
    """Values of the initializers, Constant nodes and Casts of constants (the exporter
    casts zero points to the integer type)."""
    from onnx import helper, numpy_helper
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Cast" and node.input[0] in values:
            to = next(a.i for a in node.attribute if a.name == "to")
            values[node.output[0]] = values[node.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
    return values


def _quantize_linear(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear of a constant: round half to even, saturate to the zero point's type."""
    if scale.ndim:
        shape = [1] * w.ndim
        shape[axis] = -1
        scale, zero_b = scale.reshape(shape), zero.reshape(shape)
    else:
        zero_b = zero
    info = np.iinfo(zero.dtype)
    q = np.rint(w / scale) + zero_b.astype(np.float64)
    return np.clip(q, info.min, info.max).astype(zero.dtype)


def integer_weights(model):
    """Fold every QuantizeLinear whose input is a constant (a weight) into an integer
    initializer: ``W -> Q -> DQ`` becomes ``W_int -> DQ``. Float weights no longer used are
    removed. Returns the changed ModelProto."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    constants = _constants(graph)
    folded, keep = [], []
    for node in graph.node:
        inputs = list(node.input)
        if node.op_type == "QuantizeLinear" and all(i in constants for i in inputs[:3]) and len(inputs) >= 3:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            q = _quantize_linear(constants[inputs[0]].astype(np.float64),
                                 constants[inputs[1]].astype(np.float64), constants[inputs[2]], axis)
            folded.append(numpy_helper.from_array(q, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(folded)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    constant_nodes = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
    for node in constant_nodes:
        graph.node.remove(node)
    return onnx.shape_inference.infer_shapes(model)


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(torch.nn.Module):
    """An onnxruntime session as a module (CPU tensors in, the first output out), so that the
    evaluation loops that test PyTorch models test the exported file."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(output)


def latency_ms(session, sample: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median milliseconds of one inference of ``sample``."""
    name = session.get_inputs()[0].name
    for _ in range(warmup):
        session.run(None, {name: sample})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: sample})
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))
