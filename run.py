#!/usr/bin/env python
"""Training experiments of the toolkit, one pipeline per subcommand.

    python run.py ecqx [options]     entropy-constrained (LRP-guided) trained quantization
    python run.py pnc train|eval|simulate [options]
                                     progressive neural compression for image offloading
    python run.py fl [options]       federated learning with NNC-coded updates on Flower
    python run.py tlm train|eval [options]
                                     the tiny Llama of the V2X use case, trained centrally
    python run.py compress [options] NNCF-style quantization and binarization from a JSON
                                     config, ONNX export (onnxruntime), NNC-coded integers

`python run.py PIPELINE --help` lists a pipeline's options; every pipeline accepts
`--config file.yaml` for its flag defaults (`run.py compress`: its JSON compression
config) and writes JSON results and plots.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from experiments.config import parse_with_config

# pipeline name -> module with build_parser(prog) and run(args)
PIPELINES = {
    "ecqx": "experiments.ecqx_run",
    "pnc": "experiments.pnc_run",
    "fl": "experiments.fl_run",
    "tlm": "experiments.tlm_run",
    "compress": "experiments.compress_run",
}


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", choices=sorted(PIPELINES), help="the experiment to run")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pipeline = top_parser().parse_args(argv[:1]).pipeline
    module = importlib.import_module(PIPELINES[pipeline])
    args = parse_with_config(module.build_parser(prog=f"run.py {pipeline}"), argv[1:])
    module.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
