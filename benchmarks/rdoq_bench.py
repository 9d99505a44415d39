"""Rate-distortion of RDOQ against the reference NNCodec 2.1.3, measured in one run.

For each tensor and quantizer (DQ on/off), the reference codes a qp sweep; we code the same
sweep plainly (``lambda_scale=0``, which must give the reference's bytes) and with
rate-distortion optimised quantization at several ``lambda_scale``. Our savings are read
at equal SNR: the reference's log-rate is interpolated linearly in SNR at each of our
points (points outside the reference's SNR range are left out). Writes
``rdoq_bench.json`` and ``rdoq_bench.png``.

    env/bin/python -m benchmarks.rdoq_bench            # full sweep (a few minutes)
    env/bin/python -m benchmarks.rdoq_bench --quick    # small tensor, few points (CI)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.rdoq_bench ...")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import reference  # noqa: E402
from nnc_core.metrics import snr_db  # noqa: E402
from nnc_core.tensor import encode_with_reconstruction  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tensors(quick: bool) -> dict[str, np.ndarray]:
    side = 256 if quick else 1000
    out = {f"gaussian_{side}x{side}": np.random.default_rng(0).normal(0, 0.05, (side, side)).astype(np.float32)}
    import torch
    state = torch.load(ROOT / "example" / "weights" / "fmnist_mlp.pt", weights_only=True)
    out["fmnist_mlp.fc1.weight"] = state["fc1.weight"].numpy()
    return out


def point(x: np.ndarray, bitstream: bytes, y: np.ndarray) -> dict:
    return {"bytes": len(bitstream), "bits_per_element": 8 * len(bitstream) / x.size,
            "snr_db": snr_db(x, y)}


def savings_at_equal_snr(ours: list[dict], reference: list[dict]) -> dict:
    ref = sorted(reference, key=lambda p: p["snr_db"])
    snr = np.array([p["snr_db"] for p in ref])
    log_bits = np.log([p["bits_per_element"] for p in ref])
    saved = [1 - p["bits_per_element"] / np.exp(np.interp(p["snr_db"], snr, log_bits))
             for p in ours if snr[0] <= p["snr_db"] <= snr[-1]]
    if not saved:
        return {"mean_percent": None, "points": 0}
    return {"mean_percent": 100 * float(np.mean(saved)), "min_percent": 100 * float(np.min(saved)),
            "max_percent": 100 * float(np.max(saved)), "points": len(saved)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rdoq_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256x256 gaussian and 4 qps")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="lambda_scale values to try (default: 0.5 1 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="directory for rdoq_bench.json / .png")
    args = parser.parse_args(argv)

    qps = [-40, -34, -28, -22] if args.quick else list(range(-44, -19, 2))
    data = tensors(args.quick)
    jobs = [(name, dq, qp) for name in data for dq in (True, False) for qp in qps]
    print(f"reference: {len(jobs)} encodes in one subprocess ...", flush=True)
    started = time.perf_counter()
    results = reference.default_runner().encode_many(
        [reference.EncodeCase(data[name], {"qp": qp, "use_dq": dq}) for name, dq, qp in jobs])
    print(f"  done in {time.perf_counter() - started:.1f} s")

    report = {"settings": {"qps": qps, "lambda_scales": args.lambdas, "quick": args.quick},
              "curves": []}
    ref_points: dict = {}
    identical = True
    for (name, dq, qp), result in zip(jobs, results):
        result.unwrap()
        ref_points.setdefault((name, dq), []).append(
            dict(qp=qp, **point(data[name], result.bitstream, result.decoded)))
    bar = tqdm(total=len(jobs) * (1 + len(args.lambdas)), desc="ours", unit="encode")
    for (name, dq), ref in ref_points.items():
        x = data[name]
        entry = {"tensor": name, "use_dq": dq, "reference": ref, "ours": {}}
        for scale in [0.0] + args.lambdas:
            pts = []
            for qp, ref_point in zip(qps, ref):
                bs, recon = encode_with_reconstruction(x, qp=qp, use_dq=dq, lambda_scale=scale)
                pts.append(dict(qp=qp, **point(x, bs, recon)))
                if scale == 0.0:
                    identical &= ref_point["bytes"] == len(bs)
                bar.update()
            entry["ours"][str(scale)] = {"points": pts, "saving_at_equal_snr":
                                         savings_at_equal_snr(pts, ref)}
        report["curves"].append(entry)
    bar.close()
    report["lambda_zero_matches_reference_size"] = identical

    print(f"\nsavings at equal SNR vs the reference (lambda_scale 0 matches its sizes: {identical})")
    for entry in report["curves"]:
        cells = []
        for scale in args.lambdas:
            s = entry["ours"][str(scale)]["saving_at_equal_snr"]
            cells.append(f"lambda {scale}: {s['mean_percent']:+.2f}% (max {s['max_percent']:+.2f}%)"
                         if s["mean_percent"] is not None else f"lambda {scale}: n/a")
        print(f"  {entry['tensor']:28s} {'DQ' if entry['use_dq'] else 'uniform':8s} " + " | ".join(cells))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rdoq_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "rdoq_bench.png")
    print(f"wrote {args.out / 'rdoq_bench.json'} and rdoq_bench.png")
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = report["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    for ax, entry in zip(axes[0], curves):
        ref = entry["reference"]
        ax.plot([p["bits_per_element"] for p in ref], [p["snr_db"] for p in ref], "k-o", ms=3,
                label="NNCodec 2.1.3")
        for scale, run in entry["ours"].items():
            if scale == "0.0":
                continue
            pts = run["points"]
            ax.plot([p["bits_per_element"] for p in pts], [p["snr_db"] for p in pts], "-", lw=1,
                    label=f"ours, lambda_scale {scale}")
        ax.set_title(f"{entry['tensor']}, {'DQ' if entry['use_dq'] else 'uniform'}", fontsize=8)
        ax.set_xlabel("bits per element")
        ax.set_ylabel("SNR [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
