"""The experiment building blocks behind main.py: config handling, metrics, reports."""
import argparse

import pytest
import torch

from experiments import report
from experiments.config import parse_with_config, save_args
from experiments.engine import evaluate_classification, segmentation_scores


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--qp", type=int, default=-32)
    p.add_argument("--use_dq", action="store_true")
    p.add_argument("--config")
    p.add_argument("--wandb_key")
    return p


def test_yaml_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("qp: -40\nuse_dq: true\n")
    args = parse_with_config(_parser(), ["--config", str(cfg)])
    assert args.qp == -40 and args.use_dq
    assert parse_with_config(_parser(), ["--config", str(cfg), "--qp", "-20"]).qp == -20


def test_yaml_unknown_key_is_an_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("qpp: -40\n")
    with pytest.raises(SystemExit, match="qpp"):
        parse_with_config(_parser(), ["--config", str(cfg)])


def test_saved_args_round_trip_without_secrets(tmp_path):
    args = parse_with_config(_parser(), ["--qp", "-26", "--wandb_key", "secret"])
    path = save_args(args, tmp_path)
    text = path.read_text()
    assert "secret" not in text
    again = parse_with_config(_parser(), ["--config", str(path)])
    assert again.qp == -26


def test_segmentation_scores_hand_computed():
    # rows: truth, columns: prediction; class 2 never occurs and is left out of the mean
    confusion = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    scores = segmentation_scores(confusion)
    iou0, iou1 = 3 / (3 + 1 + 2), 4 / (4 + 2 + 1)
    assert scores["mIoU"] == pytest.approx(100 * (iou0 + iou1) / 2)
    assert scores["pixel_acc"] == pytest.approx(100 * 7 / 10)


def test_classification_accuracy_counts():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5, 4, 3, 2, 1], [0, 1, 2, 3, 4, 5]])
    targets = torch.tensor([0, 2, 0])
    loader = [(logits, targets)]
    metrics = evaluate_classification(torch.nn.Identity(), loader, "cpu", verbose=False)
    assert metrics["top1"] == pytest.approx(100 / 3)
    assert metrics["top5"] == pytest.approx(200 / 3)   # the third target is ranked last


def test_table_formatting():
    text = report.format_table([{"a": "x", "b": 1.23456}], [("a", "name", "s"), ("b", "value", ".2f")])
    assert text.splitlines() == ["name  value", "----  -----", "x      1.23"]
