"""``run.py fl``: federated learning with NNC-coded updates on Flower (NNCodec 2.x's
federated pipeline; Becking et al., EuCNC 2025 and IEEE TMM 2024).

Clients train a shared model on their share of the training set (IID or Dirichlet
label-skewed), upload coded updates, the server averages them (weighted by the samples
trained on) and broadcasts the coded change of the global model. Every round logs the real
bytes in both directions, their float32 equivalent and the test accuracy of the global model
as the clients hold it; the JSON ends with a ``summary``. ``--baselines`` runs the same
federation with uncompressed float32 FedAvg, float16, 8-bit and top-k updates (same seeds,
same error feedback) and plots accuracy against cumulative bytes for all of them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
from nnc_core.fl import FLOptions, ServerLink
from nnc_core.fl.protocol import float32_bytes
from nnc_core.fl.views import exchange_view

from .builders import dataset_info, experiment_parser, loader, start_run
from .config import add_run_arguments
from .fl_tasks import create_task
from .plots import plot_traffic_accuracy

DESCRIPTION = __doc__.split("\n\n")[0]
EXAMPLES = """examples:
  python run.py fl                                     # offline default: 3 clients, Fashion-MNIST
  python run.py fl --num_clients 5 --epochs 10 --qp -36 --diff_qp -30 --sparsity 0.8 --tca
  python run.py fl --baselines                         # NNC against float32/float16/int8/top-k
  python run.py fl --partition dirichlet:0.5 --engine inprocess
"""
BASELINES = ("float32", "float16", "int8", "topk")
ENGINE_NAMES = ("simulation", "deployment", "inprocess")
ROOT = Path(__file__).resolve().parents[1]
APP_DIR = Path(__file__).resolve().parent / "flower_app"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = experiment_parser(prog, DESCRIPTION, EXAMPLES)
    fed = parser.add_argument_group("federation")
    fed.add_argument("--num_clients", type=int, default=None,
                     help="clients (default 3; for v2x one per region file)")
    fed.add_argument("--epochs", type=int, default=5, help="communication rounds (default 5)")
    fed.add_argument("--partition", default=None,
                     help="iid or dirichlet:ALPHA for images (default iid); regions or iid "
                          "for v2x (default regions: a client per region)")
    fed.add_argument("--engine", default="simulation", choices=ENGINE_NAMES,
                     help="Flower's simulation engine (Ray), its deployment engine (a SuperLink "
                          "and one SuperNode per client as processes on this machine), or in "
                          "this process (default simulation)")
    fed.add_argument("--num_cpus", type=int, default=2, help="CPUs for the simulation (default 2)")
    fed.add_argument("--codec", default="nnc", choices=["nnc", *BASELINES],
                     help="how updates travel (default nnc)")
    fed.add_argument("--baselines", action="store_true",
                     help="also run float32, float16, int8 and top-k in the same harness")
    fed.add_argument("--topk_share", type=float, default=0.01, help="share kept by top-k (0.01)")
    fed.add_argument("--window", type=int, default=8,
                     help="broadcasts kept for clients that missed rounds (default 8)")
    nnc = parser.add_argument_group("NNC coding (NNCodec's flag names)")
    for flag in ("compress_upstream", "compress_downstream", "compress_differences"):
        nnc.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=True)
    nnc.add_argument("--err_accumulation", action=argparse.BooleanOptionalAction, default=True,
                     help="error feedback: what coding drops is sent with the next update")
    nnc.add_argument("--qp", type=int, default=-32,
                     help="qp of the sparsification step and of updates (default -32)")
    nnc.add_argument("--diff_qp", type=int, default=None, help="qp of updates (default: --qp)")
    nnc.add_argument("--initial_qp", type=int, default=-32,
                     help="qp of the first distribution of the model (default -32)")
    nnc.add_argument("--nonweight_qp", type=int, default=-75)
    nnc.add_argument("--use_dq", action=argparse.BooleanOptionalAction, default=True)
    nnc.add_argument("--sparsity", type=float, default=0.0)
    nnc.add_argument("--struct_spars_factor", type=float, default=0.0)
    nnc.add_argument("--tca", action="store_true", help="temporal context adaptation")
    nnc.add_argument("--hdsp", action="store_true", help="history-dependent significance")
    nnc.add_argument("--row_skipping", action=argparse.BooleanOptionalAction, default=True)
    nnc.add_argument("--bitdepth", type=int, default=None)
    nnc.add_argument("--bnf", action="store_true",
                     help="FedBNF: BatchNorm folded into a scale and bias per channel on the "
                          "clients; running statistics stay local")
    nnc.add_argument("--bnf_momentum", type=float, default=0.3,
                     help="share of the global BatchNorm a client takes each round (0.3)")
    data = parser.add_argument_group("model, data and local training")
    data.add_argument("--model", default=None,
                      help="resnet20 for images, tinyllama for v2x (the defaults)")
    data.add_argument("--TLM_size", type=int, default=0, choices=range(4),
                      help="tinyllama size: 0.41 M, 10.0 M, 31.8 M, 85.1 M parameters (default 0)")
    data.add_argument("--max_seq_len", type=int, default=None,
                      help="tokens per record for language models (default: the longest "
                           "record of the layout, plus one)")
    data.add_argument("--model_rand_int", action=argparse.BooleanOptionalAction, default=True,
                      help="start from a random initialisation (default; --no-model_rand_int "
                           "loads the shipped or pretrained weights)")
    data.add_argument("--model_path", default=None)
    data.add_argument("--dataset", default="fashion_mnist")
    data.add_argument("--dataset_path", default=None)
    data.add_argument("--batch_size", type=int, default=64)
    data.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    data.add_argument("--weight_decay", type=float, default=1e-3)
    data.add_argument("--max_batches", type=int, default=40,
                      help="local training batches per round (default 40)")
    data.add_argument("--max_batches_test", type=int, default=40,
                      help="test batches per evaluation (default 40; 0: the whole test set)")
    data.add_argument("--workers", type=int, default=0)
    add_run_arguments(parser, results="results/fl")
    return parser


def fl_options(args, codec: str) -> FLOptions:
    return FLOptions(
        compress_upstream=args.compress_upstream, compress_downstream=args.compress_downstream,
        compress_differences=args.compress_differences, err_accumulation=args.err_accumulation,
        qp=args.qp, diff_qp=args.diff_qp, initial_qp=args.initial_qp,
        nonweight_qp=args.nonweight_qp, use_dq=args.use_dq,
        sparsity=args.sparsity, struct_spars_factor=args.struct_spars_factor, tca=args.tca,
        hdsp=args.hdsp, bnf=args.bnf, bnf_momentum=args.bnf_momentum,
        row_skipping=args.row_skipping, bitdepth=args.bitdepth,
        codec=codec, topk_share=args.topk_share, window=args.window)


# ----------------------------------------------------------------------------- the task

_TASKS: dict[str, object] = {}

# data set task -> defaults of the flags left unset: (model, partition, clients)
TASK_DEFAULTS = {"classification": ("resnet20", "iid", 3),
                 "segmentation": ("fmnist_segnet", "iid", 3),
                 "language_modeling": ("tinyllama", "regions", None)}


def resolve_defaults(args) -> argparse.Namespace:
    """Fill ``--model``, ``--partition``, ``--num_clients`` (and ``--max_seq_len``) for the
    data set's task."""
    model, partition, clients = TASK_DEFAULTS[dataset_info(args.dataset).task]
    args = argparse.Namespace(**vars(args))
    args.model = args.model or model
    args.partition = args.partition or partition
    if clients is None:         # a language data set: one client per token file
        root = datasets.v2x.resolve_root(args.dataset_path)
        args.num_clients = args.num_clients or datasets.v2x.num_clients(root)
        args.max_seq_len = args.max_seq_len or datasets.v2x.record_length(root)
    elif args.num_clients is None:
        args.num_clients = clients
    return args


def shared_task(args):
    """One task per process and configuration (clients of the simulation engine run in
    worker processes that serve several rounds)."""
    key = json.dumps(vars(args), sort_keys=True, default=str)
    if key not in _TASKS:
        _TASKS[key] = create_task(args)
    return _TASKS[key]


# ----------------------------------------------------------------------------- running

def summarize(history, model_bytes: int, num_clients: int) -> tuple[list[dict], dict]:
    """Per-round rows with cumulative totals, and the run's summary."""
    rows, total = [], {"up": 0, "down": 0, "initial": 0, "float32": 0, "initial_float32": 0}
    for entry in history:
        t = entry.traffic
        total["up"] += t.up
        total["down"] += t.down
        total["initial"] += t.initial
        total["float32"] += t.up_float32 + t.down_float32
        total["initial_float32"] += t.initial_float32
        rows.append({"round": entry.round, "bytes_up": t.up, "bytes_down": t.down,
                     "bytes_initial": t.initial, "bytes_up_float32": t.up_float32,
                     "bytes_down_float32": t.down_float32, "uploads": t.uploads,
                     "failures": t.failures, "cumulative_bytes": total["up"] + total["down"] + total["initial"],
                     "cumulative_float32": total["float32"] + total["initial_float32"],
                     "seconds": entry.seconds, **entry.metrics})
    coded = total["up"] + total["down"]
    summary = {
        "rounds": len(history), "clients": num_clients, "model_float32_bytes": model_bytes,
        "bytes_up": total["up"], "bytes_down": total["down"], "bytes_initial": total["initial"],
        "bytes_uncompressed": total["float32"], "bytes_initial_uncompressed": total["initial_float32"],
        "traffic_share": coded / max(total["float32"], 1),
        "traffic_share_with_initial": (coded + total["initial"]) /
                                      max(total["float32"] + total["initial_float32"], 1),
        "final_accuracy": history[-1].metrics.get("accuracy") if history else None,
    }
    if history and "perplexity" in history[-1].metrics:
        summary["final_perplexity"] = history[-1].metrics["perplexity"]
    return rows, summary


class _Console:
    """The logger of a ServerApp that runs in its own process (no W&B there)."""

    def print(self, text: str) -> None:
        print(text, flush=True)

    def log(self, values: dict, step: int | None = None) -> None:
        pass


def make_strategy(args, log):
    """The strategy of one federation: server end, evaluation on the test set, round log."""
    from nnc_core.fl.flower import NNCFedAvg

    codec, task = args.codec, shared_task(args)
    options = fl_options(args, codec)
    view = exchange_view(options, task)
    test_loader = loader(args, "test", task.info, shuffle=False)

    def on_round(entry):
        t = entry.traffic
        perplexity = entry.metrics.get("perplexity")
        log.print(f"[{codec}] round {entry.round}: accuracy {entry.metrics.get('accuracy', 0):.2f} %"
                  f"{'' if perplexity is None else f', perplexity {perplexity:.4f}'}, "
                  f"up {t.up:,} B, down {t.down + t.initial:,} B, failures {t.failures}")
        log.log({f"{codec}/accuracy": entry.metrics.get("accuracy"), f"{codec}/bytes_up": t.up,
                 f"{codec}/bytes_down": t.down + t.initial}, step=entry.round)

    template = task.template()
    server = ServerLink(view.exchanged(template), options, model_bytes=float32_bytes(template))
    return NNCFedAvg(server,
                     evaluate=lambda weights: task.evaluate(view.model(weights, None), test_loader),
                     on_round=on_round, min_available_nodes=args.num_clients,
                     min_train_nodes=args.num_clients)


def client_handler(args):
    """The ClientApp's train handler of this run."""
    from nnc_core.fl.flower import NNClient

    options = fl_options(args, args.codec)

    def handle(message, context):
        partition = int(context.node_config.get("partition-id", 0))
        return NNClient(shared_task(args), options, partition).handle(message, context)

    return handle


def args_from_json(text: str) -> argparse.Namespace:
    return argparse.Namespace(**json.loads(text))


def deployment_results(args) -> Path:
    return Path(args.results) / f"fl_deployment_{args.codec}.json"


def run_server(args, grid) -> None:
    """The ServerApp's main in the deployment engine: run, then write rows and summary."""
    from flwr.app import ArrayRecord

    strategy = make_strategy(args, _Console())
    strategy.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=args.epochs)
    rows, summary = summarize(strategy.history, strategy.server.model_bytes, args.num_clients)
    deployment_results(args).write_text(json.dumps({"rounds": rows, "summary": summary},
                                                   default=float))


def federate(args, codec: str, log) -> dict:
    """One federation with ``codec`` on ``args.engine``; returns its rows and summary."""
    from nnc_core.fl.engines import run_deployment, run_inprocess, run_simulation
    from nnc_core.fl.flower import client_app as make_client_app

    args = argparse.Namespace(**{**vars(args), "codec": codec})
    options = fl_options(args, codec)
    start = time.perf_counter()
    if args.engine == "deployment":
        run_deployment(APP_DIR, args.num_clients, {"args": json.dumps(vars(args))},
                       Path(args.results) / f"deployment_{codec}", pythonpath=str(ROOT))
        outcome = json.loads(deployment_results(args).read_text())
        rows, summary = outcome["rounds"], outcome["summary"]
        for row in rows:
            log.print(f"[{codec}] round {row['round']}: accuracy {row.get('accuracy', 0):.2f} %")
    else:
        holder = {}

        def strategy_for(context):
            holder["strategy"] = make_strategy(args, log)
            return holder["strategy"]

        app = make_client_app(lambda context: shared_task(args), options)
        if args.engine == "simulation":
            run_simulation(strategy_for, app, args.num_clients, args.epochs, num_cpus=args.num_cpus)
        else:
            run_inprocess(strategy_for, app, args.num_clients, args.epochs)
        strategy = holder["strategy"]
        rows, summary = summarize(strategy.history, strategy.server.model_bytes, args.num_clients)
    summary.update(codec=codec, seconds=time.perf_counter() - start)
    return {"codec": codec, "options": options.to_dict(), "rounds": rows, "summary": summary}


def summary_table(runs: list[dict]) -> str:
    lines = [f"{'codec':<8} {'accuracy %':>10} {'up B':>12} {'down B':>12} {'initial B':>11} "
             f"{'share %':>8} {'with initial %':>14}"]
    for run in runs:
        s = run["summary"]
        lines.append(f"{run['codec']:<8} {s['final_accuracy'] or 0:>10.2f} {s['bytes_up']:>12,} "
                     f"{s['bytes_down']:>12,} {s['bytes_initial']:>11,} "
                     f"{100 * s['traffic_share']:>8.3f} {100 * s['traffic_share_with_initial']:>14.3f}")
    return "\n".join(lines)


def run(args) -> dict:
    if args.device not in (None, "cpu"):
        raise SystemExit("error: --device: federated clients train on the CPU (the engines "
                         "give each client one CPU and no GPU)")
    try:
        args = resolve_defaults(args)
        exchange_view(fl_options(args, args.codec), shared_task(args))
    except (ValueError, TypeError) as error:
        raise SystemExit(f"error: {error}") from None
    _, _, out_dir, log = start_run(args, project="nnc-fl")
    codecs = [args.codec] + [c for c in BASELINES if args.baselines and c != args.codec]
    runs = [federate(args, codec, log) for codec in codecs]
    log.print("\n" + summary_table(runs))
    results = {"model": args.model, "dataset": args.dataset, "partition": args.partition,
               "engine": args.engine, "runs": runs, "summary": runs[0]["summary"]}
    results["plot"] = str(plot_traffic_accuracy(runs, out_dir / "fl_accuracy_bytes.png",
                                                f"{args.model} on {args.dataset}, "
                                                f"{args.num_clients} clients"))
    path = out_dir / "fl_results.json"
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    log.print(f"results: {path}")
    log.finish()
    return results
