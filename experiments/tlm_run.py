"""``run.py tlm``: the tiny Llama of the V2X use case (NNCodec 2.x; Becking et al., EuCNC 2025),
trained centrally and evaluated.

``tokenize`` writes the token layout of :mod:`datasets.v2x` (and trains its SentencePiece
model) from the Berlin V2X table, a CSV file with one row per measurement; ``train`` fits
``tinyllama`` (``--TLM_size``) to all clients' training records (AdamW, linear
warm-up, cosine decay, gradients clipped to norm 1) and writes a checkpoint; ``eval``
reports for a checkpoint the next-token top-1 accuracy and perplexity on the test records
(padding excluded) and the relative error of the QoS features it generates
(:mod:`experiments.lm_eval`). The federated use case is ``run.py fl --dataset v2x``.

Under torchrun ``train`` runs data-parallel (DDP; ``--steps`` counts optimizer steps, each
of N times ``--batch_size`` records), the token metrics come from the processes' shards of
the test records together, the QoS generation from rank 0, which alone writes.
``tokenize`` writes the layout and runs in one process only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import datasets
import models
from datasets.v2x import read_meta, record_length, resolve_root
from datasets.v2x_tokenizer import V2XTokenizer, build_v2x

from .builders import dataset_info, experiment_parser, setup_errors, start_run
from .config import add_run_arguments
from .engine import evaluate_language_model, train_one_epoch
from .fl_tasks import adamw, build_language_model, cosine_with_warmup
from .lm_eval import qos_prediction_errors

DESCRIPTION = __doc__.split("\n\n")[0]
EXAMPLES = """examples:
  python run.py tlm train                       # size 0 on the (synthetic) V2X records
  python run.py tlm eval --model_path results/tlm/tinyllama_0_v2x.pt
  python run.py tlm tokenize --table berlin_v2x.csv --dataset_path data/berlin_v2x
  python run.py tlm train --TLM_size 1 --steps 3000 --dataset_path data/berlin_v2x
  torchrun --nproc_per_node 2 run.py tlm train --batch_size 16     # 2 processes, 32 per step
"""
ACTIONS = ("tokenize", "train", "eval")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = experiment_parser(prog, DESCRIPTION, EXAMPLES, data_parallel=True)
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    add = parser.add_argument
    add("--model", default="tinyllama")
    add("--TLM_size", type=int, default=0, choices=range(4),
        help="0.41 M, 10.0 M, 31.8 M or 85.1 M parameters (default 0)")
    add("--model_path", default=None, help="checkpoint to write (train) or read (eval); "
        "default results/tlm/<model>_<size>_<dataset>.pt")
    add("--dataset", default="v2x")
    add("--dataset_path", default=None, help="V2X layout (default: the synthetic stand-in)")
    add("--max_seq_len", type=int, default=None,
        help="tokens per record (default: the longest record of the layout, plus one)")
    add("--batch_size", type=int, default=32,
        help="batch size per process (default 32; under torchrun a step sees N times as many)")
    add("--lr", type=float, default=3e-3)
    add("--weight_decay", type=float, default=0.1)
    add("--steps", type=int, default=600, help="training steps (default 600)")
    add("--max_batches_test", type=int, default=0, help="test batches (0: all)")
    add("--qos_records", type=int, default=100,
        help="test records whose QoS features are generated (default 100; 0: none)")
    add("--workers", type=int, default=0)
    table = parser.add_argument_group("tokenize")
    table.add_argument("--table", default=None, help="the V2X table (CSV) to tokenize")
    table.add_argument("--client_column", default="area",
                       help="column naming a row's client (region; default area)")
    table.add_argument("--time_column", default="time", help="timestamp column (default time)")
    table.add_argument("--test_fraction", type=float, default=0.1)
    add_run_arguments(parser, results="results/tlm")
    return parser


def default_path(args) -> str:
    return f"{args.results}/{args.model}_{args.TLM_size}_{args.dataset}.pt"


def _split(args, split: str):
    with setup_errors(f"data set {args.dataset!r}"):
        return datasets.create_dataset(args.dataset, root=args.dataset_path, split=split,
                                       max_seq_len=args.max_seq_len)


def evaluate_checkpoint(model, args, device, log) -> dict:
    """Token metrics on the test records and QoS prediction errors of the first
    ``--qos_records`` of them."""
    dist = log.dist
    test = _split(args, "test")
    limit = args.max_batches_test * args.batch_size if args.max_batches_test else None
    loader = torch.utils.data.DataLoader(dist.shard(test, limit), batch_size=args.batch_size,
                                         num_workers=args.workers)
    metrics = evaluate_language_model(model, loader, device, verbose=args.verbose,
                                      max_batches=args.max_batches_test or None, dist=dist)
    root = resolve_root(args.dataset_path)
    tokenizer = V2XTokenizer.load(f"{root}/tokenizer.model")
    texts = [tokenizer.decode(seq[seq != tokenizer.pad_id]) for seq in test.sequences[:args.qos_records]]
    # generation is not split: rank 0, which reports, does it alone
    metrics["qos"] = qos_prediction_errors(model, tokenizer, texts, device=device,
                                           verbose=args.verbose) if dist.is_main else {}
    metrics["synthetic_data"] = test.synthetic
    log.log({"test/top1": metrics["top1"], "test/perplexity": metrics["perplexity"],
             **{f"qos/{f}_relative_error": row["relative_error"]
                for f, row in metrics["qos"].items() if row["relative_error"] is not None}})
    log.print(f"test: top-1 {metrics['top1']:.2f} %, perplexity {metrics['perplexity']:.4f} "
              f"({metrics['tokens']:,} tokens{', SYNTHETIC data' if test.synthetic else ''})")
    for feature, row in metrics["qos"].items():
        if row["relative_error"] is None:
            log.print(f"  {feature:<10} no prediction parsed ({row['records']} records)")
            continue
        log.print(f"  {feature:<10} relative error {100 * row['relative_error']:7.2f} %, absolute "
                  f"{row['absolute_error']:8.3f}  ({row['parsed']}/{row['records']} parsed)")
    return metrics


def train(args, device, log) -> dict:
    info = dataset_info(args.dataset)
    args.model_rand_int, path = True, args.model_path or default_path(args)
    model = build_language_model(args, info).to(device)
    dist = log.dist
    records = _split(args, "train")
    sampler = dist.sampler(records, seed=args.seed)
    data = torch.utils.data.DataLoader(records, batch_size=args.batch_size, shuffle=sampler is None,
                                       sampler=sampler, num_workers=args.workers)
    optimizer = adamw(model, args.lr, args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(args.steps))
    done, losses = 0, []
    while done < args.steps:
        losses.append(train_one_epoch(model, data, optimizer, device, task=info.task,
                                      max_batches=args.steps - done, verbose=args.verbose,
                                      scheduler=scheduler, clip_grad=1.0,
                                      desc=f"train {done}/{args.steps}", dist=dist,
                                      epoch=len(losses)))
        done += min(len(data), args.steps - done)
        log.print(f"step {done}: train loss {losses[-1]:.4f}")
        log.log({"train_loss": losses[-1]}, step=done)
    metrics = evaluate_checkpoint(model, args, device, log)
    if dist.is_main:
        models.save_checkpoint(model, path, size=args.TLM_size, max_seq_len=args.max_seq_len,
                               steps=args.steps, top1=metrics["top1"], perplexity=metrics["perplexity"])
    log.print(f"checkpoint: {path}")
    return {"checkpoint": path, "train_loss": losses, **metrics}


def evaluate(args, device, log) -> dict:
    path = args.model_path or default_path(args)
    if not Path(path).exists():
        raise SystemExit(f"error: checkpoint {path} not found (write one with `run.py tlm train`)")
    args.model_rand_int, args.model_path = False, path
    model = build_language_model(args, dataset_info(args.dataset)).to(device)
    return {"checkpoint": path, **evaluate_checkpoint(model, args, device, log)}


def tokenize(args, device, log) -> dict:
    if not args.table or not args.dataset_path:
        raise SystemExit("error: tokenize needs --table (the CSV) and --dataset_path (the output)")
    if not Path(args.table).exists():
        raise SystemExit(f"error: no table at {args.table}")
    try:
        tokenizer = build_v2x(args.table, args.dataset_path, client_column=args.client_column,
                              time_column=args.time_column, test_fraction=args.test_fraction,
                              seed=args.seed)
    except KeyError as error:
        raise SystemExit(f"error: --table {args.table} has no column {error}") from None
    except ValueError as error:
        raise SystemExit(f"error: --table {args.table}: {error}") from None
    meta = read_meta(args.dataset_path)
    log.print(f"{args.dataset_path}: {len(meta['clients'])} clients ({', '.join(meta['clients'])}), "
              f"{tokenizer.vocab_size} pieces, records of at most {meta['max_record_tokens']} tokens")
    return meta


ACTION_FUNCTIONS = {"tokenize": tokenize, "train": train, "eval": evaluate}


def run(args) -> dict:
    if args.action != "tokenize" and args.max_seq_len is None:
        args.max_seq_len = record_length(resolve_root(args.dataset_path))
    device, _, out_dir, log = start_run(args, project="nnc-tlm",
                                        args_file=f"tlm_{args.action}_args.yaml")
    if args.action == "tokenize" and log.dist.enabled:
        raise SystemExit("error: tlm tokenize writes one layout: run it without torchrun")
    result = ACTION_FUNCTIONS[args.action](args, device, log)
    if not log.dist.is_main:
        return result
    path = out_dir / f"tlm_{args.action}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    log.print(f"results: {path}")
    log.finish()
    return result
