"""Encoder options, named and defaulted like the reference software's ``args`` dicts.

People coming from NNCodec pass the same dict: ``encode(x, **args)``. Every reference key
is accepted; a few only steer the reference's file output and have no effect here, since
encoding returns bytes and writes nothing, and the few this API does not provide raise
``NotImplementedError`` when switched on. Unknown keys raise ``TypeError``.
:meth:`nnc_core.codec.StreamSettings.from_options` is the one place that turns options into
the stream's signalling.
"""
from dataclasses import dataclass, fields

# the reference tensor API's args, with its defaults
REFERENCE_DEFAULTS = {
    "approx_method": "uniform",
    "bitdepth": None,
    "compress_differences": False,
    "cuda_device": None,
    "err_accumulation": False,
    "job_identifier": "TAIMP_coding",
    "nonweight_qp": -75,
    "opt_qp": False,
    "qp": -32,
    "quantize_only": False,
    "results": ".",
    "row_skipping": True,
    "sparsity": 0.0,
    "struct_spars_factor": 0.9,
    "tca": False,
    "pre_signalling": False,
    "tensor_id": "0",
    "tensor_path": None,
    "use_dq": True,
    "param_opt": True,
    "qp_per_tensor": None,
    "verbose": False,
}

# reference keys about files, devices and logging: accepted, no effect on the bitstream
NO_EFFECT = {"cuda_device", "job_identifier", "results", "tensor_path", "verbose"}

# reference keys this API does not provide, with the value that means "off" and why
UNAVAILABLE = {
    "opt_qp": (False, "opt_qp chooses a qp per tensor of a model: use nnc_core.nn.encode"),
    "quantize_only": (False, "quantize_only is not provided: encode_with_reconstruction() "
                             "returns what a decoder reconstructs"),
    "err_accumulation": (False, "err_accumulation (error feedback of open-loop updates) belongs "
                                "to federated learning, nnc_core.fl; coding against a "
                                "CodingState's base already carries quantization errors into "
                                "the next update"),
}


@dataclass(frozen=True)
class TensorOptions:
    qp: int = -32
    nonweight_qp: int = -75
    qp_density: int = 2
    use_dq: bool = True
    approx_method: str = "uniform"
    bitdepth: int | None = None
    row_skipping: bool = True
    param_opt: bool = True
    tensor_id: str = "0"
    qp_per_tensor: dict | None = None
    compress_differences: bool = False
    pre_signalling: bool = False
    tca: bool = False
    sparsity: float = 0.0            # share of weight zeros to reach (tools.sparsify)
    struct_spars_factor: float = 0.9  # gain of the structured step that follows it (0: off)
    # extensions beyond the reference tensor API
    hdsp: bool = False               # try history-dependent significance per NDU, keep the shorter
    scan_order: int = 0
    cabac_unary_length_minus1: int = 10
    lambda_scale: float = 0.0        # > 0: rate-distortion optimised quantization

    def qp_for(self, name: str, is_weight: bool) -> int:
        if self.qp_per_tensor and name in self.qp_per_tensor:
            return int(self.qp_per_tensor[name])
        return self.qp if is_weight else self.nonweight_qp


_FIELDS = {f.name for f in fields(TensorOptions)}


def resolve_options(options: dict) -> TensorOptions:
    """Validate keyword options and return them as a :class:`TensorOptions`."""
    unknown = set(options) - _FIELDS - set(REFERENCE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    for key, (off, why) in UNAVAILABLE.items():
        if key in options and options[key] != off:
            raise NotImplementedError(f"option {key}={options[key]!r}: {why}")
    chosen = {k: v for k, v in options.items() if k in _FIELDS}
    opts = TensorOptions(**chosen)
    _validate(opts)
    # the structured step runs after the unstructured one (as in NNCodec, whose args dicts
    # carry struct_spars_factor=0.9 with sparsity=0): a gain asked for on its own would idle
    if opts.sparsity == 0 and options.get("struct_spars_factor", 0.9) not in (0, 0.9):
        raise ValueError("struct_spars_factor acts together with sparsity > 0 (structured "
                         "sparsification follows the unstructured step): set sparsity too")
    return opts


def _validate(o: TensorOptions) -> None:
    for name in ("qp", "nonweight_qp", "qp_density", "scan_order", "cabac_unary_length_minus1"):
        value = getattr(o, name)
        if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= o.qp_density <= 7:
        raise ValueError(f"qp_density must be in 0..7, got {o.qp_density}")
    if o.approx_method not in ("uniform", "codebook"):
        raise ValueError(f"approx_method must be 'uniform' or 'codebook', got {o.approx_method!r}")
    if o.bitdepth is not None and not (isinstance(o.bitdepth, int) and 1 <= o.bitdepth <= 31):
        raise ValueError(f"bitdepth must be None or an integer in 1..31, got {o.bitdepth!r}")
    if o.bitdepth is not None and o.approx_method == "codebook":
        raise ValueError("bitdepth and approx_method='codebook' cannot be combined")
    if not 0 <= o.scan_order <= 4:
        raise ValueError(f"scan_order must be in 0..4, got {o.scan_order}")
    if not _number(o.lambda_scale) or not 0 <= o.lambda_scale < float("inf"):
        raise ValueError(f"lambda_scale must be a finite number >= 0, got {o.lambda_scale!r}")
    if not 0 <= o.cabac_unary_length_minus1 <= 255:
        raise ValueError("cabac_unary_length_minus1 must be in 0..255")
    if not isinstance(o.tensor_id, str) or "\0" in o.tensor_id:
        raise ValueError(f"tensor_id must be a string without NUL characters, got {o.tensor_id!r}")
    if o.qp_per_tensor is not None and not isinstance(o.qp_per_tensor, dict):
        raise TypeError("qp_per_tensor must be a dict {tensor name: qp}")
    if not _number(o.sparsity) or not 0 <= o.sparsity < 1:
        raise ValueError(f"sparsity must be a share in [0, 1), got {o.sparsity!r}")
    if not _number(o.struct_spars_factor) or not 0 <= o.struct_spars_factor < float("inf"):
        raise ValueError(f"struct_spars_factor must be a finite number >= 0, "
                         f"got {o.struct_spars_factor!r}")
    # TCA and HDSP are signalled in the parent-node fields, which compress_differences turns on
    for tool in ("tca", "hdsp"):
        if getattr(o, tool) and not o.compress_differences:
            raise ValueError(f"{tool}=True needs compress_differences=True (the stream signals "
                             f"{tool.upper()} only for NDUs that code a difference)")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))
