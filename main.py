#!/usr/bin/env python
"""Compress a neural network with NNC (ISO/IEC 15938-17), evaluate it, and report.

With no arguments, compresses the ResNet-20 trained on Fashion-MNIST that ships in
example/weights/ and evaluates it on the Fashion-MNIST test set:

    python main.py                                   # qp -32, uniform quantization
    python main.py --use_dq --bnf --lsa --qp -26     # the paper's full tool chain
    python main.py --qp_sweep -44 -38 -32 -26 -20    # several qps, rate-accuracy plot
    python main.py --model resnet56 --dataset cifar100 --model_path resnet56.pt --use_dq
    python main.py --model resnet50 --dataset imagenet --dataset_path /data/imagenet --use_dq
    python main.py --model timm/mobilenetv3_small_050 --model_rand_int --pre_train_model
    python main.py --model resnet20 --dataset fashion_mnist --pre_train_model --epochs 15 --lr 0.1
    torchrun --nproc_per_node 2 main.py --pre_train_model --epochs 12 --batch_size 64 --lr 0.1
    python main.py --model hf:path/to/llm_folder --qp_sweep -40 -34 --use_dq
    python main.py --model hf:path/to/llm_folder --dataset text --dataset_path wiki.test.raw \
        --qp_sweep -38 -32 -26 --use_dq --baselines      # perplexity of any causal LM
    python main.py --model tinyllama --dataset v2x --model_path results/tlm/tinyllama_0_v2x.pt \
        --qp_sweep -38 -32 -26 -20 --use_dq --baselines      # perplexity per bit

Results go to --results: a JSON file, the .nnc bitstream of every qp, the resolved
args.yaml and, for a sweep, a rate-accuracy plot. An hf:<path> checkpoint (a local Hugging
Face model folder or a .safetensors file) is coded and reported per tensor (bits per weight,
relative error); with a language-modelling --dataset (text, v2x) a causal LM folder is also
evaluated, its perplexity measured before and after coding (needs transformers).

Under torchrun (torchrun --nproc_per_node N main.py ...) pre-training and LSA run data
parallel (DDP; gloo on the CPU, nccl on CUDA), --batch_size is per process, the test set is
split over the processes, and only rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
import sys

import datasets
import models
from experiments.config import add_run_arguments, parse_with_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"models: {', '.join(models.list_models())}; and any timm model as "
               "timm/<name> (a name of timm.list_models(), e.g. timm/resnet18; pretrained "
               "weights come from the Hugging Face hub, --model_rand_int needs no download); "
               "and hf:<path>, a local Hugging Face model folder (config.json and "
               "*.safetensors, sharded or not) or a .safetensors file, coded and reported per "
               "tensor, and evaluated as a causal LM with --dataset text or v2x (nothing is "
               "downloaded).\n"
               f"datasets: {', '.join(datasets.list_datasets())}.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    coding = parser.add_argument_group("coding (names as in NNCodec)")
    coding.add_argument("--qp", type=int, default=-32,
                        help="quantization parameter of weights; step about 2^(qp/4) (default -32)")
    coding.add_argument("--nonweight_qp", type=int, default=-75,
                        help="qp of biases and BatchNorm parameters (default -75)")
    coding.add_argument("--qp_density", type=int, default=2, help="qp steps per octave = 2^d (default 2)")
    coding.add_argument("--qp_sweep", type=int, nargs="+", metavar="QP",
                        help="code at each of these qps in one run and plot rate against accuracy")
    coding.add_argument("--opt_qp", action="store_true",
                        help="choose a qp per layer from its relative size and spread")
    coding.add_argument("--use_dq", action="store_true", help="dependent (trellis) quantization")
    coding.add_argument("--lambda_scale", type=float, default=0.0, metavar="SCALE",
                        help="rate-distortion optimised quantization: choose each level by "
                             "distortion + lambda * rate, lambda this multiple of the high-rate "
                             "slope (default 0: off; 1 is the usual setting)")
    coding.add_argument("--bnf", action="store_true", help="fold BatchNorm into the preceding layers")
    coding.add_argument("--lsa", action="store_true",
                        help="local scaling adaptation: train per-channel scales after quantization")
    coding.add_argument("--sparsity", type=float, default=0.0, metavar="SHARE",
                        help="zero the smallest weights until this share of all parameters is "
                             "zero, before quantization (default 0: off)")
    coding.add_argument("--struct_spars_factor", type=float, default=0.0, metavar="GAIN",
                        help="with --sparsity, also zero the output channels whose mean "
                             "magnitude is below GAIN times the layer's mean (default 0: off; "
                             "NNCodec's 0.9 is meant for updates and removes about half the "
                             "channels of a full model)")
    coding.add_argument("--baselines", action="store_true",
                        help="also evaluate the weights rounded to float16 and to 8 and 4 bits "
                             "(round-to-nearest, one scale per output channel), with their bits "
                             "per parameter, and plot the metric (perplexity for language "
                             "models) against bits for all")
    coding.add_argument("--approx_method", choices=["uniform", "codebook"], default="uniform")
    coding.add_argument("--bitdepth", type=int, default=None,
                        help="integer bit depth of the quantized weights (default: none)")
    coding.add_argument("--threads", type=int, default=None, metavar="N",
                        help="code and decode the model's tensors on N threads (default: all "
                             "cores); the bitstream does not depend on it")
    data = parser.add_argument_group("model and data")
    data.add_argument("--model", default="resnet20",
                      help="registered model name, timm/<name> for a timm model, or hf:<path> "
                           "for a local Hugging Face checkpoint (see below)")
    data.add_argument("--model_path", default=None,
                      help="checkpoint to load (default: the shipped one for the default "
                           "model, else pretrained weights)")
    data.add_argument("--model_rand_int", action="store_true",
                      help="start from a random initialisation (no checkpoint, no download)")
    data.add_argument("--dataset", default="fashion_mnist", help="registered dataset name")
    data.add_argument("--dataset_path", default=None,
                      help="dataset root (default: the dataset's usual place)")
    data.add_argument("--max_seq_len", type=int, default=None,
                      help="tokens per sequence of a language-modelling data set (default: the "
                           "data set's; the longest v2x record + 1, windows of 256 for text)")
    data.add_argument("--batch_size", type=int, default=64,
                      help="batch size per process (default 64; under torchrun a training step "
                           "sees N times as many)")
    data.add_argument("--workers", type=int, default=0, help="data-loading processes")
    data.add_argument("--max_batches", type=int, default=None,
                      help="train (pre-training, LSA) on at most this many batches (steps) per "
                           "epoch, in every process")
    data.add_argument("--max_eval_batches", type=int, default=None,
                      help="evaluate on at most this many batches (default: the whole test set)")
    train = parser.add_argument_group(
        "training (pre-training and LSA)",
        "data parallel under torchrun --nproc_per_node N main.py ...; only rank 0 writes")
    train.add_argument("--pre_train_model", action="store_true",
                       help="train the model first and save it to --model_path")
    train.add_argument("--epochs", type=int, default=1, help="epochs of pre-training or LSA")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate of pre-training or LSA")
    add_run_arguments(parser, results="results")
    add("--plot_segmentation_masks", action="store_true",
        help="save images, ground truth and predicted masks before and after compression")
    return parser


def main(argv=None) -> int:
    args = parse_with_config(build_parser(), argv)
    from experiments.nnc_run import run
    try:
        run(args)
    except models.WeightsDownloadError as error:  # no network and no cached weights
        raise SystemExit(f"error: model {args.model!r}: {error}") from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
