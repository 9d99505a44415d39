"""Command line interface: ``python -m nnc_core encode|decode|info`` (installed as ``nnc``).

* ``encode`` codes one tensor (.npy, or .pt holding a tensor) or a whole checkpoint (a state
  dict in .pt/.pth/.bin, .safetensors, a folder of safetensors shards, .npz) into an NNC
  bitstream (ISO/IEC 15938-17); checkpoints are read and coded one tensor at a time, with
  their dtypes and tied names recorded (:mod:`nnc_core.stream_info`),
* ``decode`` reconstructs it: one tensor to .npy or .pt, a checkpoint to .safetensors, .pt or
  .npz with its names, shapes and dtypes,
* ``info`` lists the NNR units of a bitstream with their header fields (format note 3, 4) and the
  QP that starts each CABAC payload (5.2).

Errors in the input (missing files, malformed bitstreams, unusable options) end the program with
exit status 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nnc_core import checkpoints
from nnc_core.bitstream import (LayerParameterSet, ModelParameterSet, NDUHeader, PayloadType,
                                Topology, TopologyFormat, Unit, UnitType, parse_stream, read_qp)
from nnc_core.dtypes import dtype_name
from nnc_core.errors import DecodeError

PROG = "nnc"
EXIT_ERROR = 2

EPILOG = """\
examples:
  python -m nnc_core encode weights.npy -o weights.nnc              # defaults: qp -32, DQ on
  python -m nnc_core encode fc.pt -o fc.nnc --qp -40 --no_dq --scan_order 1
  python -m nnc_core encode emb.npy -o emb.nnc --approx_method codebook
  python -m nnc_core decode weights.nnc -o decoded.npy              # or decoded.pt
  python -m nnc_core encode model.safetensors -o model.nnc --qp -38 # a checkpoint
  python -m nnc_core encode llm_folder/ -o llm.nnc                  # sharded safetensors
  python -m nnc_core encode resnet.pt -o resnet.nnc --opt_qp        # a state dict
  python -m nnc_core decode model.nnc -o model.safetensors          # or .pt, .npz
  python -m nnc_core info weights.nnc                               # units and header fields
  python -m nnc_core info weights.nnc --json
"""

TENSOR_SUFFIXES = (".npy",)
CHECKPOINT_SUFFIXES = (".safetensors", ".npz", *checkpoints.TORCH_SUFFIXES)
INPUTS = ".npy, .pt/.pth/.bin (a tensor or a state dict), .safetensors, .npz or a folder of " \
         ".safetensors shards"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# -- argument parsing ----------------------------------------------------------------------------
def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_threads(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--threads", type=_threads, default=None, metavar="N",
                        help=f"{what} on N threads (default: all cores); the result does not "
                             "depend on it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Neural Network Coding (ISO/IEC 15938-17) of tensors and "
                               "checkpoints.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = commands.add_parser(
        "encode", help="code a tensor or a checkpoint into an NNC bitstream",
        description="Code one tensor (the tensor API, nnc_core.tensor) or a checkpoint (the "
                    "model API, nnc_core.nn: one NDU per tensor, read and coded one at a time, "
                    "integer tensors losslessly, dtypes and tied names recorded) into an NNC "
                    "bitstream. Options left out take the codec defaults (those of the "
                    "reference software).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    enc.add_argument("input", type=Path, help=f"tensor or checkpoint: {INPUTS}")
    enc.add_argument("-o", "--output", type=Path, required=True, help="bitstream file to write")
    # SUPPRESS: options not given are not forwarded, so the codec's own defaults apply.
    keep = argparse.SUPPRESS
    enc.add_argument("--qp", type=int, default=keep,
                     help="quantization parameter of weight tensors (2+ dims; default -32)")
    enc.add_argument("--nonweight_qp", type=int, default=keep,
                     help="quantization parameter of other tensors (default -75)")
    enc.add_argument("--qp_density", type=int, default=keep,
                     help="QP steps per doubling of the step size, as 2**d (default 2)")
    dq = enc.add_mutually_exclusive_group()
    dq.add_argument("--use_dq", dest="use_dq", action="store_true", default=keep,
                    help="dependent (trellis-coded) quantization (default)")
    dq.add_argument("--no_dq", dest="use_dq", action="store_false", default=keep,
                    help="plain uniform scalar quantization")
    enc.add_argument("--approx_method", choices=["uniform", "codebook"], default=keep,
                     help="'codebook' tries codebook quantization and keeps it when smaller")
    enc.add_argument("--bitdepth", type=int, default=keep, metavar="N",
                     help="derive the step size so that levels fit N bits")
    enc.add_argument("--no_row_skipping", dest="row_skipping", action="store_false",
                     default=keep, help="do not signal all-zero rows")
    enc.add_argument("--no_param_opt", dest="param_opt", action="store_false", default=keep,
                     help="do not optimise the context initialisation parameters")
    enc.add_argument("--tensor_id", default=keep, metavar="NAME",
                     help="name of a single tensor in the bitstream (default '0'; a "
                          "checkpoint's tensors keep their names)")
    enc.add_argument("--scan_order", type=int, choices=range(5), default=keep,
                     help="0: raster scan; 1-4: 8x8 ... 64x64 block scan with entry points")
    enc.add_argument("--sparsity", type=float, default=keep, metavar="SHARE",
                     help="zero weights (2+ dims) until this share is zero, smallest first "
                          "(default 0: off)")
    enc.add_argument("--struct_spars_factor", type=float, default=keep, metavar="GAIN",
                     help="with --sparsity: also zero the output channels whose mean magnitude "
                          "is below GAIN times the mean (default 0.9; 0: off)")
    _add_threads(enc, "code a checkpoint's tensors")
    model = enc.add_argument_group("checkpoints only (sparsity and opt_qp read the whole "
                                   "checkpoint before coding)")
    model.add_argument("--opt_qp", action="store_true", default=keep,
                       help="a qp per weight tensor from its relative size and spread")
    for tool, what in (("bnf", "BatchNorm folding"), ("lsa", "local scaling adaptation")):
        model.add_argument(f"--{tool}", action="store_true", default=keep,
                           help=f"{what}: needs the torch.nn.Module, which a file does not "
                                f"hold (use nnc_core.nn.encode(model, {tool}=True)); refused")

    dec = commands.add_parser(
        "decode", help="reconstruct a tensor or a checkpoint from an NNC bitstream",
        description="Decode an NNC bitstream. One tensor goes to .npy or .pt; the tensors of a "
                    "model or checkpoint stream (local scales applied) to .safetensors, .pt "
                    "(a state dict) or .npz, with the names, shapes and dtypes the stream "
                    "records (bfloat16 becomes float32 in .npy and .npz, which lack it) and "
                    "tied names restored.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    dec.add_argument("input", type=Path, help="bitstream file")
    dec.add_argument("-o", "--output", type=Path, required=True,
                     help="file to write: .npy, .pt/.pth/.bin (a tensor, or the state dict of a "
                          "model), .safetensors or .npz")
    _add_threads(dec, "decode the tensors")

    info = commands.add_parser(
        "info", help="list the NNR units and header fields of a bitstream",
        description="List every NNR unit of a bitstream; for data units also the tensor "
                    "names, shapes, coding tools and QP.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("input", type=Path, help="bitstream file")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


# -- file helpers --------------------------------------------------------------------------------
def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    return path.read_bytes()


def _read_input(path: Path) -> np.ndarray | checkpoints.Checkpoint:
    """One tensor (numpy array) or a checkpoint."""
    if not path.exists():
        raise CliError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix not in TENSOR_SUFFIXES + CHECKPOINT_SUFFIXES:
        raise CliError(f"{path}: unsupported input format {suffix or '(none)'} (use {INPUTS})")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in checkpoints.TORCH_SUFFIXES:
        obj = checkpoints.load_torch(path)
        if hasattr(obj, "detach"):                       # one torch tensor
            tensor = obj.detach().cpu()
            return (tensor.float() if dtype_name(tensor) == "bfloat16" else tensor).numpy()
        return checkpoints.from_torch(obj, path)
    return checkpoints.read_checkpoint(path)


def _save_tensor(path: Path, array: np.ndarray, dtype: str) -> str:
    """Write one tensor; returns the dtype written (bfloat16 becomes float32 in .npy)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        dtype = "float32" if dtype == "bfloat16" else dtype
        np.save(path, array, allow_pickle=False)
    elif suffix in checkpoints.TORCH_SUFFIXES:
        import torch

        tensor = torch.from_numpy(np.require(array, requirements="C"))
        torch.save(tensor.to(torch.bfloat16) if dtype == "bfloat16" else tensor, path)
    else:
        raise CliError(f"{path}: unsupported output format {suffix or '(none)'} (use .npy or .pt)")
    return dtype


def _tensor_codec():
    try:
        from nnc_core import tensor
    except ImportError as exc:
        raise CliError(f"the tensor codec is not available ({exc})") from exc
    return tensor


# -- commands ------------------------------------------------------------------------------------
ENCODE_OPTIONS = ("qp", "nonweight_qp", "qp_density", "use_dq", "approx_method", "bitdepth",
                  "row_skipping", "param_opt", "tensor_id", "scan_order", "sparsity",
                  "struct_spars_factor", "opt_qp", "bnf", "lsa")
MODEL_OPTIONS = ("opt_qp", "bnf", "lsa")


def cmd_encode(args: argparse.Namespace) -> None:
    source = _read_input(args.input)
    options = {key: getattr(args, key) for key in ENCODE_OPTIONS if hasattr(args, key)}
    if isinstance(source, np.ndarray):
        _encode_tensor(source, args, options)
    else:
        _encode_checkpoint(source, args, options)


def _encode_tensor(x: np.ndarray, args: argparse.Namespace, options: dict) -> None:
    model_only = [f"--{k}" for k in MODEL_OPTIONS if k in options]
    if model_only:
        raise CliError(f"{', '.join(model_only)}: model options, and {args.input} holds one "
                       "tensor")
    bitstream = _tensor_codec().encode(x, **options)
    args.output.write_bytes(bitstream)
    bits_per_element = 8 * len(bitstream) / max(x.size, 1)
    print(f"{args.input}: shape {list(x.shape)} {x.dtype}, {x.size} elements, {x.nbytes} bytes")
    print(f"{args.output}: {len(bitstream)} bytes, {bits_per_element:.3f} bits per element")
    if getattr(args, "sparsity", 0):
        print(f"zeros after decoding: {100 * _zero_share(_tensor_codec().decode(bitstream)):.1f} %")


def _encode_checkpoint(checkpoint: checkpoints.Checkpoint, args: argparse.Namespace,
                       options: dict) -> None:
    if "tensor_id" in options:
        raise CliError("--tensor_id names the tensor of a tensor file; a checkpoint's tensors "
                       "keep their names")
    from nnc_core import nn
    parts = nn.encode_iter(checkpoint, keep_dtypes=True, threads=args.threads, **options)
    size = zeros = weights = 0
    try:
        with open(args.output, "wb") as out:       # unit by unit: one tensor in memory
            for part in parts:
                out.write(part.data)
                size += len(part.data)
                counts = [(v.size, v.size - np.count_nonzero(v)) for v in part.tensors.values()
                          if np.ndim(v) > 1]
                weights += sum(c[0] for c in counts)
                zeros += sum(c[1] for c in counts)
                del part                           # not kept while the next tensor is coded
    except BaseException:
        args.output.unlink(missing_ok=True)        # no half-written stream is left behind
        raise
    elements = sum(int(np.prod(s)) for n, s in checkpoint.shapes.items() if n not in checkpoint.ties)
    kinds = {}
    for dtype in checkpoint.dtypes.values():
        kinds[dtype] = kinds.get(dtype, 0) + 1
    tied = f", {len(checkpoint.ties)} tied names coded once" if checkpoint.ties else ""
    print(f"{args.input}: {len(checkpoint)} tensors ({', '.join(f'{n} {d}' for d, n in kinds.items())}"
          f"{tied}), {elements} elements, {checkpoints.checkpoint_bytes(checkpoint)} bytes")
    print(f"{args.output}: {size} bytes, {8 * size / max(elements, 1):.3f} bits per element")
    if getattr(args, "sparsity", 0):
        print(f"zeros after decoding: {100 * zeros / max(weights, 1):.1f} % of the weights "
              "(2+ dimensions)")


def _zero_share(array: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(array) / max(array.size, 1)


def cmd_decode(args: argparse.Namespace) -> None:
    bitstream = _read_file(args.input)
    suffix = args.output.suffix.lower()
    if suffix not in (".npy", *CHECKPOINT_SUFFIXES):
        raise CliError(f"{args.output}: unsupported output format (use .npy, .safetensors, "
                       ".npz or .pt)")
    from nnc_core import nn
    tensors, dtypes = nn.decode_with_dtypes(bitstream, threads=args.threads)
    if not tensors:
        raise DecodeError("the bitstream holds no tensor (no NDU unit)")
    if len(tensors) == 1 and suffix in (".npy", *checkpoints.TORCH_SUFFIXES):
        (name, value), = tensors.items()
        array = np.asarray(value)
        written = _save_tensor(args.output, array, dtypes[name])
        print(f"{args.output}: shape {list(array.shape)} {written}, decoded from "
              f"{len(bitstream)} bytes")
        return
    if suffix == ".npy":
        raise CliError(f"the stream holds {len(tensors)} tensors: write them to .safetensors, "
                       ".pt or .npz")
    for name, value in tensors.items():          # decoded sparsity per layer
        if np.ndim(value) > 1:
            print(f"  {name}: shape {list(value.shape)}, {100 * _zero_share(value):.1f} % zeros")
    written = checkpoints.write_checkpoint(args.output, tensors, dtypes)
    widened = sorted(n for n in tensors if written[n] != dtypes[n])
    if widened:
        print(f"{args.output}: {len(widened)} bfloat16 tensors written as float32 "
              f"({suffix} has no bfloat16), e.g. {widened[0]}")
    print(f"{args.output}: {len(tensors)} tensors ({sum(v.size for v in tensors.values())} "
          f"elements), decoded from {len(bitstream)} bytes")


def _format_name(code: int) -> str:
    try:
        return TopologyFormat(code).name
    except ValueError:
        return "reserved"


def _qp_of(unit: Unit, header: NDUHeader) -> tuple[int | None, str | None]:
    if not header.has_qp:
        return None, None
    try:
        return read_qp(unit.payload, *unit.quantization_parameters()), None
    except (DecodeError, ValueError) as exc:
        return None, str(exc)


def ndu_record(unit: Unit, header: NDUHeader) -> dict[str, Any]:
    qp, qp_error = _qp_of(unit, header)
    record: dict[str, Any] = {
        "names": header.names,
        "payload_type": header.payload_type.name,
        "dims": list(header.dims),
        "dq_flag": int(header.dq_flag),
        "qp": qp,
    }
    if qp_error:
        record["qp_error"] = qp_error
    if header.payload_type == PayloadType.BLOCK and qp is not None:
        record["qp_scope"] = "first tensor of the block in payload order"
    if header.element_indices:
        record["element_indices"] = header.element_indices
    record.update({
        "codebook": None if header.codebook is None else {
            "size": header.codebook.size, "zero_offset": header.codebook.zero_offset,
            "egk": header.codebook.egk, "values": header.codebook.values},
        "scan_order": header.scan_order,
        "entry_points": [{"bit_offset": ep.bit_offset, "value": ep.value,
                          "dq_state": ep.dq_state} for ep in header.entry_points],
        "cabac_unary_length": header.cabac_unary_length,
        "compressed_parameter_types": header.compressed_parameter_types,
        "node_id_present": int(header.node_id_present),
        "device_id": header.device_id,
        "parameter_id": header.parameter_id,
        "put_node_depth": header.put_node_depth,
        "parent_node_id_present": int(header.parent_node_id_present),
        "temporal_context_modeling": int(header.temporal_context_modeling),
        "payload_bytes": len(unit.payload),
    })
    if header.parent_node_id_present:
        record["parent_node_id_type"] = header.parent_node_id_type
        record["parent_device_id"] = header.parent_device_id
    if header.decompressed_data_format is not None:
        record["decompressed_data_format"] = header.decompressed_data_format
    return record


def unit_record(unit: Unit) -> dict[str, Any]:
    """JSON-ready summary of one unit."""
    record: dict[str, Any] = {"index": unit.index, "type": unit.type.name, "offset": unit.offset,
                              "size": unit.size, "header_size": unit.header_size}
    content = unit.content
    if unit.type == UnitType.STR:
        record["profile"] = content
    elif isinstance(content, (ModelParameterSet, LayerParameterSet)):
        record["quantization_method_flags"] = content.quantization_method_flags
        if content.has_quantization_parameters:
            record["qp_density"] = content.qp_density
            record["qp_base"] = content.qp_base
        if isinstance(content, ModelParameterSet):
            record["topology_carriage"] = int(content.topology_carriage)
            record["topology_indexed_reference"] = int(content.topology_indexed_reference)
            record["parent_signalling_enabled"] = int(content.parent_signalling_enabled)
            record["pre_flag"] = int(content.pre_flag)
            if content.base_model_id is not None:
                record["base_model_id"] = content.base_model_id
    elif isinstance(content, Topology):
        record["storage_format"] = content.storage_format
        record["storage_format_name"] = _format_name(content.storage_format)
        record["compression_format"] = content.compression_format
        if content.element_ids is not None:
            record["element_ids"] = content.element_ids
        elif content.raw is not None:
            record["raw_bytes"] = len(content.raw)
        else:
            record["data"] = content.data
    elif isinstance(content, NDUHeader):
        record.update(ndu_record(unit, content))
    return record


def _text_lines(path: Path, size: int, records: list[dict[str, Any]]) -> list[str]:
    lines = [f"{path}: {size} bytes, {len(records)} units"]
    for rec in records:
        head = f"  #{rec['index']:<3} {rec['type']:<4} offset {rec['offset']:>8}  " \
               f"size {rec['size']:>8}"
        kind = rec["type"]
        if kind == "STR":
            lines.append(f"{head}  profile {rec['profile']}")
        elif kind in ("MPS", "LPS"):
            qp = (f"qp_density {rec['qp_density']}, qp_base {rec['qp_base']}"
                  if "qp_density" in rec else "no quantization parameters")
            extra = ""
            if kind == "MPS":
                extra = f", parent signalling {'on' if rec['parent_signalling_enabled'] else 'off'}"
                if rec["parent_signalling_enabled"]:
                    extra += f" (pre_flag {rec['pre_flag']})"
            lines.append(f"{head}  {qp}{extra}")
        elif kind == "TPL":
            data = f", data {len(rec['data'])} characters" if rec.get("data") else ""
            lines.append(f"{head}  storage format {rec['storage_format']} "
                         f"({rec['storage_format_name']}), compression {rec['compression_format']}"
                         f"{data}")
        elif kind == "NDU":
            lines.extend(_ndu_lines(head, rec))
        else:
            lines.append(head)
    return lines


def _ndu_lines(head: str, rec: dict[str, Any]) -> list[str]:
    ids = rec["names"] if rec["names"] else [f"#{i}" for i in rec.get("element_indices", [])]
    qp = "" if rec["qp"] is None else f"  qp {rec['qp']}"
    lines = [f"{head}  {rec['payload_type']} {', '.join(map(repr, ids))}  dims {rec['dims']}"
             f"{qp}  dq {rec['dq_flag']}"]
    pad = " " * 8
    if "qp_scope" in rec:
        lines.append(f"{pad}qp of the {rec['qp_scope']}")
    if "qp_error" in rec:
        lines.append(f"{pad}qp unreadable: {rec['qp_error']}")
    lines.append(f"{pad}header {rec['header_size']} bytes, payload {rec['payload_bytes']} bytes; "
                 f"cabac_unary_length {rec['cabac_unary_length']}; "
                 f"compressed_parameter_types {rec['compressed_parameter_types']}")
    node = (f"device {rec['device_id']}, parameter {rec['parameter_id']}, "
            f"depth {rec['put_node_depth']}" if rec["node_id_present"] else "no node id")
    if rec["parent_node_id_present"]:
        node += (f"; parent id type {rec['parent_node_id_type']}, parent device "
                 f"{rec['parent_device_id']}, temporal context modeling "
                 f"{rec['temporal_context_modeling']}")
    lines.append(f"{pad}node: {node}")
    codebook = rec["codebook"]
    if codebook is not None:
        lines.append(f"{pad}codebook: size {codebook['size']}, zero offset "
                     f"{codebook['zero_offset']}, egk {codebook['egk']}: {codebook['values']}")
    scan = f"{pad}scan order {rec['scan_order']}"
    if rec["entry_points"]:
        points = ", ".join(f"(offset {ep['bit_offset']}, value {ep['value']}, dq state "
                           f"{ep['dq_state']})" for ep in rec["entry_points"])
        scan += f"; {len(rec['entry_points'])} entry points: {points}"
    lines.append(scan)
    return lines


def cmd_info(args: argparse.Namespace) -> None:
    data = _read_file(args.input)
    records = [unit_record(unit) for unit in parse_stream(data)]
    if args.json:
        print(json.dumps({"file": str(args.input), "size": len(data), "units": records},
                         indent=2))
    else:
        print("\n".join(_text_lines(args.input, len(data), records)))


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 on errors)."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (CliError, OSError, DecodeError, ValueError, TypeError, NotImplementedError) as exc:
        # DecodeError is a ValueError; ValueError / TypeError also cover options or tensors
        # that the codec rejects.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
