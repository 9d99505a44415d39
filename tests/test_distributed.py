"""Data-parallel training under torchrun (experiments/distributed.py): real two-process gloo
jobs on the CPU keep every process's weights identical, split the training samples without
losing any, evaluate exactly like one process, and only rank 0 writes; plus the one-process
context and the errors of a misused environment.

Run as a script (``torchrun ... tests/test_distributed.py OUT``), this file is the worker of
those jobs: it trains each loop for a few steps and writes, per rank, a digest of the final
state and the number of samples it drew to ``OUT/rank<r>.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":                     # a torchrun worker: the repository's packages
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

from experiments import distributed  # noqa: E402
from experiments.distributed import Distributed, DistributedError, shard_bounds  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(not FMNIST.exists(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
BATCH, STEPS = 8, 3                            # per process: 2 processes train on 2 * 8 * 3 samples
EVAL_BATCHES = 7                               # 112 test samples: shards of 56, batches of 16


# --------------------------------------------------------------------------- the worker

class Counted(torch.utils.data.Dataset):
    """A data set that counts the samples drawn from it."""

    def __init__(self, base):
        self.base, self.drawn = base, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.drawn += 1
        return self.base[index]


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_digest(model: torch.nn.Module) -> str:
    return digest(*model.state_dict().values())


def fmnist(split: str):
    import datasets
    return datasets.create_dataset("fashion_mnist", split=split)


def train_loader(dist: Distributed, data, batch: int, shuffle: bool = True):
    sampler = dist.sampler(data, seed=0, shuffle=shuffle)
    return torch.utils.data.DataLoader(data, batch_size=batch, sampler=sampler,
                                       shuffle=shuffle and sampler is None)


def shipped_resnet20() -> torch.nn.Module:
    import models
    from experiments.builders import SHIPPED_CHECKPOINTS
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    models.load_checkpoint(model, SHIPPED_CHECKPOINTS[("resnet20", "fashion_mnist")])
    return model


def engine_run(dist: Distributed, train) -> dict:
    """ResNet-20 (BatchNorm) from a random init, SGD through the shared loop."""
    from experiments.engine import train_one_epoch
    import models
    torch.manual_seed(0)
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    data = Counted(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = train_one_epoch(model, train_loader(dist, data, BATCH), optimizer, "cpu",
                           max_batches=STEPS, verbose=False, dist=dist, epoch=1)
    return {"digest": state_digest(model), "samples": data.drawn, "loss": loss}


def evaluation_run(dist: Distributed, test) -> dict:
    """The sharded evaluation and, in this process alone, that of one process."""
    from experiments.engine import evaluate_classification
    model = shipped_resnet20()
    batch, limit = 16, EVAL_BATCHES * 16
    shard = torch.utils.data.DataLoader(dist.shard(test, limit), batch_size=batch)
    whole = torch.utils.data.DataLoader(test, batch_size=batch)
    return {"sharded": evaluate_classification(model, shard, "cpu", max_batches=EVAL_BATCHES,
                                               verbose=False, dist=dist),
            "single": evaluate_classification(model, whole, "cpu", max_batches=EVAL_BATCHES,
                                              verbose=False)}


def ecqx_run(dist: Distributed, train) -> dict:
    """ECQx (LRP every step) from the shipped ResNet-20: the state outside the module, the
    shadows, assignments and betas, must stay identical too."""
    from ecqx.composites import make_composite
    from ecqx.quantizer import ModelQuantizer
    from ecqx.train import RelevanceTracker, make_optimizers, train_epoch
    model = shipped_resnet20()
    quantizer = ModelQuantizer(model, bits=4, Lambda=0.05)
    tracker = RelevanceTracker(make_composite("epsilon_plus_flat_bn_pass", "resnetcifar"))
    data = Counted(train)
    loss = train_epoch(model, quantizer, train_loader(dist, data, BATCH),
                       make_optimizers(model, quantizer, 1e-3), "cpu", relevance=tracker,
                       max_batches=2, verbose=False, dist=dist, epoch=0)
    layers = quantizer.layers.values()
    return {"digest": state_digest(model),
            "quantizer": digest(*[s.shadow for s in layers], *[s.indices for s in layers]),
            "betas": [s.beta for s in layers], "samples": data.drawn, "loss": loss}


def lsa_run(dist: Distributed, train) -> dict:
    """Local scaling adaptation inside the NNC encoder: the same bitstream everywhere."""
    from nnc_core import nn as nnc_nn
    data = Counted(train)
    coded = nnc_nn.encode_model(shipped_resnet20(), train_loader=train_loader(dist, data, BATCH),
                                qp=-32, lsa=True, epochs=1, max_batches=2)
    return {"digest": hashlib.sha256(coded.bitstream).hexdigest(), "samples": data.drawn}


def pnc_run(dist: Distributed, train) -> dict:
    """The PNC autoencoder's reconstruction stage (tail-drop on)."""
    import datasets
    from pnc.model import PNC
    from pnc.train import train_stage
    torch.manual_seed(0)
    model = PNC("fmnist")
    data = Counted(train)
    info = datasets.dataset_info("fashion_mnist")
    losses = train_stage(model, None, train_loader(dist, data, BATCH), "reconstruction", epochs=1,
                         lr=1e-3, device="cpu", mean=info.mean, std=info.std, max_batches=2,
                         verbose=False, log=lambda _: None, dist=dist)
    return {"digest": state_digest(model), "samples": data.drawn, "loss": losses[-1]}


def compress_run(dist: Distributed, train) -> dict:
    """RB sparsity fine-tuning (sampled masks, the density loss) and then magnitude sparsity
    of the shipped ResNet-20 through the shared loop: masks and weights identical."""
    import torch.nn.functional as F
    from compress import CompressionConfig, Context, apply_config, compression_loss, finalize
    from experiments.engine import train_one_epoch
    torch.manual_seed(0)
    model = shipped_resnet20()
    data = Counted(train)
    config = CompressionConfig({"compression": {"algorithm": "rb_sparsity", "sparsity_init": 0.3,
                                                "params": {"mask_speed": 30}}})
    algorithms = apply_config(model, config, Context(train_loader(dist, data, BATCH), "cpu",
                                                     F.cross_entropy, verbose=False))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = train_one_epoch(model, train_loader(dist, data, BATCH), optimizer, "cpu",
                           max_batches=2, verbose=False, regularizer=lambda: compression_loss(algorithms),
                           dist=dist, epoch=0)
    finalize(model, algorithms)
    return {"digest": state_digest(model), "samples": data.drawn, "loss": loss}


def mlp_step(dist: Distributed, train, batch: int) -> torch.nn.Module:
    """One SGD step of a network without BatchNorm on the first samples in order: one
    process with ``batch`` or N processes with ``batch / N`` each see the same samples."""
    from experiments.engine import train_one_epoch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_one_epoch(model, train_loader(dist, train, batch, shuffle=False), optimizer, "cpu",
                    max_batches=1, verbose=False, dist=dist)
    return model


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    dist = distributed.setup("cpu")
    train, test = fmnist("train"), fmnist("test")
    report = {"rank": dist.rank, "world_size": dist.world_size,
              "engine": engine_run(dist, train), "evaluation": evaluation_run(dist, test),
              "ecqx": ecqx_run(dist, train), "lsa": lsa_run(dist, train),
              "pnc": pnc_run(dist, train), "compress": compress_run(dist, train)}
    mlp = mlp_step(dist, train, BATCH)
    if dist.is_main:
        torch.save(mlp.state_dict(), out / "mlp.pt")
    (out / f"rank{dist.rank}.json").write_text(json.dumps(report))


# --------------------------------------------------------------------------- launching jobs

def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``args`` in two processes on this machine (gloo), as a user starts them."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENVIRONMENT}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    return f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The worker's reports of both ranks (one job for all the checks below)."""
    if not FMNIST.exists():
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("job")
    result = torchrun(__file__, str(out))
    assert result.returncode == 0, output(result)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


# --------------------------------------------------------------------------- two processes

@pytest.mark.parametrize("loop", ["engine", "ecqx", "lsa", "pnc", "compress"])
def test_every_process_ends_with_the_same_state(job, loop):
    _, (first, second) = job
    assert (first["rank"], second["rank"], first["world_size"]) == (0, 1, 2)
    for key in ("digest", "quantizer", "betas", "loss"):
        assert first[loop].get(key) == second[loop].get(key), (loop, key)


@pytest.mark.parametrize("loop, steps", [("engine", STEPS), ("ecqx", 2), ("lsa", 2), ("pnc", 2),
                                         ("compress", 2)])
def test_each_process_draws_its_batches_of_the_training_set(job, loop, steps):
    # --batch_size per process, --max_batches steps in every process: the two processes
    # together draw what one process with twice the batch size draws
    _, reports = job
    assert [r[loop]["samples"] for r in reports] == [BATCH * steps] * 2


def test_sharded_evaluation_equals_one_process(job):
    _, reports = job
    for report in reports:
        sharded, single = report["evaluation"]["sharded"], report["evaluation"]["single"]
        assert sharded["samples"] == single["samples"] == EVAL_BATCHES * 16
        assert (sharded["top1"], sharded["top5"]) == (single["top1"], single["top5"])
        # float32 sums over other batches: the loss agrees to rounding
        assert sharded["loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_two_processes_step_like_one_with_twice_the_batch(job):
    out, _ = job
    two = torch.load(out / "mlp.pt")
    one = mlp_step(Distributed(), fmnist("train"), 2 * BATCH).state_dict()
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-6)


@needs_data
def test_ecqx_under_torchrun_writes_once(tmp_path):
    result = torchrun("run.py", "ecqx", "--lrp", "--max_batches", "2", "--epochs", "1",
                      "--max_eval_batches", "4", "--batch_size", "16", "--results", str(tmp_path),
                      "--wandb")
    assert result.returncode == 0, output(result)
    assert result.stdout.count("results: ") == 1 and result.stdout.count("epoch 1/1:") == 1
    stem = tmp_path / "ecqx_resnet20_4bit_L0.05"
    history = json.loads(Path(f"{stem}.json").read_text())["history"]
    assert [row["metric_name"] for row in history] == ["top1", "top1"]
    # 4 batches of 16 test images, split over the two processes: all 64 counted once
    assert history[-1]["metrics"]["samples"] == 64
    assert Path(f"{stem}_best.nnc").exists() and Path(f"{stem}_best.pt").exists()
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 1


@needs_data
def test_compress_fine_tuning_under_torchrun_writes_once(tmp_path):
    config = ROOT / "configs" / "fmnist_resnet20_filter_pruning.json"
    result = torchrun("run.py", "compress", "--config", str(config), "--epochs", "2",
                      "--max_batches", "2", "--max_eval_batches", "2", "--export", "none",
                      "--results", str(tmp_path))
    assert result.returncode == 0, output(result)
    assert result.stdout.count("results: ") == 1 and result.stdout.count("epoch 2:") == 1
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["float32_bytes_after"] < report["float32_bytes"]      # pruned filters removed
    assert (tmp_path / report["nnc"]).exists()


@pytest.mark.slow
@needs_data
def test_main_pre_training_and_lsa_under_torchrun(tmp_path):
    model = tmp_path / "resnet20.pt"
    result = torchrun("main.py", "--pre_train_model", "--model_path", str(model), "--epochs", "1",
                      "--max_batches", "3", "--max_eval_batches", "2", "--lsa",
                      "--results", str(tmp_path / "out"))
    assert result.returncode == 0, output(result)
    assert model.exists() and result.stdout.count("results: ") == 1
    runs = json.loads((tmp_path / "out" / "resnet20_results.json").read_text())["runs"]
    assert runs[0]["decoded_metrics"]["samples"] == 2 * 64


@pytest.mark.slow
@needs_data
def test_pnc_and_tlm_training_under_torchrun(tmp_path):
    pnc = torchrun("run.py", "pnc", "train", "--stages", "reconstruction", "--epochs", "1",
                   "--max_batches", "2", "--calibration_images", "200",
                   "--checkpoint", str(tmp_path / "pnc.pt"), "--results", str(tmp_path / "pnc"))
    assert pnc.returncode == 0, output(pnc)
    assert (tmp_path / "pnc.pt").exists() and pnc.stdout.count("saved PNC") == 1
    tlm = torchrun("run.py", "tlm", "train", "--steps", "4", "--qos_records", "2",
                   "--max_batches_test", "2", "--results", str(tmp_path / "tlm"))
    assert tlm.returncode == 0, output(tlm)
    result = json.loads((tmp_path / "tlm" / "tlm_train.json").read_text())
    assert len(result["train_loss"]) >= 1 and result["tokens"] > 0 and result["qos"]


# --------------------------------------------------------------------------- one process

def test_without_torchrun_one_process_changes_nothing(monkeypatch):
    for name in distributed.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    dist = distributed.setup("cpu")
    model, data = torch.nn.Linear(2, 2), list(range(10))
    assert (dist.rank, dist.world_size, dist.is_main, dist.enabled) == (0, 1, True, False)
    assert dist.wrap(model) is model and dist.shard(data, 4) is data
    assert dist.sampler(data, seed=0) is None and dist.all_reduce_sums(1.5, 3) == (1.5, 3)
    assert distributed.setup("cpu") is not dist        # nothing joined, nothing kept


@pytest.mark.parametrize("length, limit", [(10, None), (10, 7), (3, None), (1, None), (5, 100)])
def test_evaluation_shards_cover_each_sample_once(length, limit):
    for world_size in (2, 3, 4):
        bounds = [shard_bounds(length, r, world_size, limit) for r in range(world_size)]
        covered = [i for start, stop in bounds for i in range(start, stop)]
        assert covered == list(range(min(length, limit or length)))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def _torchrun_environment(monkeypatch, **overrides):
    values = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "29500", **overrides}
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_an_incomplete_environment_asks_for_torchrun(monkeypatch):
    _torchrun_environment(monkeypatch, RANK=None, MASTER_PORT=None)
    with pytest.raises(DistributedError, match="RANK, MASTER_PORT not set: start .* with torchrun"):
        distributed.setup("cpu")


def test_world_size_without_torch_distributed_is_an_error(monkeypatch):
    _torchrun_environment(monkeypatch)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(DistributedError, match="no torch.distributed"):
        distributed.setup("cpu")


def test_nccl_needs_cuda(monkeypatch):
    _torchrun_environment(monkeypatch)
    with pytest.raises(DistributedError, match="nccl backend needs CUDA"):
        distributed.setup("cpu", backend="nccl")


@pytest.mark.parametrize("device, message", [("cuda:1", "cuda"), ("mps", "runs on cpu or cuda")])
def test_a_device_that_does_not_fit_is_an_error(monkeypatch, device, message):
    _torchrun_environment(monkeypatch)
    with pytest.raises(DistributedError, match=message):
        distributed.setup(device)


def test_the_pipelines_report_a_misused_environment_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENVIRONMENT}
    result = subprocess.run([sys.executable, "run.py", "ecqx"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**env, "WORLD_SIZE": "2"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: torchrun: WORLD_SIZE=2 but RANK")


def test_the_training_clis_explain_torchrun():
    import main
    from experiments import ecqx_run, pnc_run, tlm_run
    for parser in (main.build_parser(), ecqx_run.build_parser("run.py ecqx"),
                   pnc_run.build_parser("run.py pnc"), tlm_run.build_parser("run.py tlm")):
        text = " ".join(parser.format_help().split())
        assert "torchrun --nproc_per_node" in text and "per process" in text, parser.prog


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
