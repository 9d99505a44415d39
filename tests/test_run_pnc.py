"""run.py pnc as users run it: --help, a short training, eval and simulate on the shipped model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import pnc_run

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(not FMNIST.exists(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def test_help_lists_actions_and_flags():
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "pnc", "--help"], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="offline"))
    assert result.returncode == 0
    for text in ("train", "eval", "simulate", "--trace", "--deadlines", "--no_tail_drop", "--stages",
                 "--checkpoint", "--compare", "--preset", "--wandb"):
        assert text in result.stdout, text


@needs_data
def test_short_training_writes_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "pnc.pt"
    args = pnc_run.build_parser().parse_args(
        ["train", "--max_batches", "3", "--epochs", "1", "--checkpoint", str(path),
         "--calibration_images", "300", "--results", str(tmp_path), "--no-verbose"])
    result = pnc_run.run(args)
    codec = pnc_run.load_pnc(path)
    assert set(result["losses"]) == {"reconstruction", "joint"}
    assert len(codec.codes) == 10 and codec.quantizer.bits == 6 and codec.quantizer.clip == result["clip"]
    assert torch.load(path, weights_only=True)["tail_drop"] is True


@needs_data
def test_eval_and_simulate_agree_on_the_shipped_model(tmp_path):
    common = ["--images", "60", "--qualities", "10", "50", "--results", str(tmp_path), "--no-verbose"]
    parser = pnc_run.build_parser()
    rate = pnc_run.run(parser.parse_args(["eval", *common]))
    sim = pnc_run.run(parser.parse_args(["simulate", *common, "--deadlines", "0.01", "1.0"]))
    pnc_curve = rate["curves"]["PNC"]
    assert len(pnc_curve) == 10 and all(0 <= a <= 100 for _, a in pnc_curve)
    constant = sim["traces"]["constant 16 kbit/s"]
    # 1 s at 2000 B/s carries every packet of every method: the full-quality accuracies
    assert constant["PNC"][1] == pytest.approx(pnc_curve[-1][1])
    assert constant["jpeg q50"][1] == pytest.approx(rate["curves"]["jpeg q50"][0][1])
    # 10 ms carry 20 bytes minus the encoding time: less than any JPEG file
    assert constant["jpeg q10"][0] == 0.0
    assert json.loads((tmp_path / "pnc_deadlines.json").read_text())["deadlines"] == [0.01, 1.0]
    assert (tmp_path / "pnc_rate_accuracy.png").stat().st_size > 1000
    assert rate["entropy_coders"]["huffman"]["mean_bytes_all_channels"] > 0


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    args = pnc_run.build_parser().parse_args(["eval", "--checkpoint", str(tmp_path / "none.pt"),
                                              "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="not found"):
        pnc_run.run(args)
