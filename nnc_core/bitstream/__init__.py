"""NNR bitstream syntax of ISO/IEC 15938-17: units, parameter sets and NDU headers.

Everything outside the arithmetic-coded payloads lives here:

* :mod:`.bits` - descriptors ``u``, ``i``, ``ue``, ``ie``, ``st``, ``flt``, byte alignment;
* :mod:`.units` - unit framing, start unit, model / layer parameter sets, topology unit;
* :mod:`.ndu` - compressed data unit headers, codebooks, entry points;
* :mod:`.stream` - :func:`parse_stream`, walking a whole bitstream;
* :mod:`.qp` - the per-tensor QP at the start of a CABAC payload.
"""
from .bits import BitReader, BitWriter
from .ndu import (Codebook, EntryPoint, NDUHeader, block_member_count, encode_ndu,
                  header_entry_point_count, layer_shape, num_entry_points, read_ndu_header)
from .perfmaps import PerformanceMap
from .qp import read_bypass_prefix, read_qp
from .stream import Unit, parse_stream
from .units import (LayerParameterSet, ModelParameterSet, PayloadType, Topology, TopologyFormat,
                    UnitType, encode_lps, encode_mps, encode_start_unit, encode_topology)

__all__ = [
    "BitReader", "BitWriter", "Codebook", "EntryPoint", "LayerParameterSet", "ModelParameterSet",
    "NDUHeader", "PayloadType", "PerformanceMap", "Topology", "TopologyFormat", "Unit", "UnitType",
    "block_member_count", "encode_lps", "encode_mps", "encode_ndu", "encode_start_unit",
    "encode_topology", "header_entry_point_count", "layer_shape", "num_entry_points",
    "parse_stream", "read_bypass_prefix", "read_ndu_header", "read_qp",
]
