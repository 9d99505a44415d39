"""Encoder options, named and defaulted like the reference software's ``args`` dicts.

People coming from NNCodec pass the same dict: ``encode(x, **args)``. Every reference key
is accepted; a few only steer the reference's file output and have no effect here, since
encoding returns bytes and writes nothing. Unknown keys raise ``TypeError``.
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
NO_EFFECT = {"cuda_device", "job_identifier", "results", "tensor_path", "verbose",
             "struct_spars_factor"}

# reference features that belong to the model-level / incremental coding tools
NOT_YET_SUPPORTED = {"sparsity": 0.0, "opt_qp": False, "quantize_only": False,
                     "err_accumulation": False}


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
    # extensions beyond the reference tensor API
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
    for key, default in NOT_YET_SUPPORTED.items():
        if key in options and options[key] != default:
            raise NotImplementedError(
                f"option {key}={options[key]!r} is a model-level tool not available in the tensor API")
    chosen = {k: v for k, v in options.items() if k in _FIELDS}
    opts = TensorOptions(**chosen)
    _validate(opts)
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
    if isinstance(o.lambda_scale, bool) or not isinstance(o.lambda_scale, (int, float)) \
            or not 0 <= o.lambda_scale < float("inf"):
        raise ValueError(f"lambda_scale must be a finite number >= 0, got {o.lambda_scale!r}")
    if not 0 <= o.cabac_unary_length_minus1 <= 255:
        raise ValueError("cabac_unary_length_minus1 must be in 0..255")
    if not isinstance(o.tensor_id, str) or "\0" in o.tensor_id:
        raise ValueError(f"tensor_id must be a string without NUL characters, got {o.tensor_id!r}")
    if o.qp_per_tensor is not None and not isinstance(o.qp_per_tensor, dict):
        raise TypeError("qp_per_tensor must be a dict {tensor name: qp}")
