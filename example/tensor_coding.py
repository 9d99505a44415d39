"""Code tensors with NNC and report size, quality and speed.

By default two tensors are coded with the default options of the tensor API
(qp -32, dependent quantization on):

  (a) a random Gaussian tensor, 1000 x 1000, standard deviation 0.05;
  (b) a trained weight: the first layer (256 x 784) of a small MLP trained on
      Fashion-MNIST (``example/weights/fmnist_mlp_fc1.npy``, made by
      ``example/train_weights.py``).

``--tensor PATH`` codes a tensor of your own instead (``.npy``, or ``.pt``/``.pth``
holding a tensor or a state dict, in which case every floating-point entry is coded).

For each tensor the script prints its shape, its size in bytes before and after coding,
the bits per element, the signal-to-noise ratio of the reconstruction
(10 log10(sum x^2 / sum (x - y)^2), in dB) and the encode and decode times, and it
checks that decoding the bitstream gives exactly the encoder's reconstruction
(exit status 1 if not).

    env/bin/python example/tensor_coding.py
    env/bin/python example/tensor_coding.py --qp -40 --no_dq
    env/bin/python example/tensor_coding.py --tensor example/weights/fmnist_mlp.pt
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHT = os.path.join(HERE, "weights", "fmnist_mlp_fc1.npy")


def load_tensors(path):
    """Return a list of (name, numpy array) read from a .npy or a torch file."""
    if path.endswith(".npy"):
        return [(os.path.basename(path), np.load(path))]
    if path.endswith((".pt", ".pth")):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, torch.Tensor):
            return [(os.path.basename(path), obj.detach().numpy())]
        if isinstance(obj, dict):
            items = [(f"{os.path.basename(path)}:{k}", v.detach().numpy()) for k, v in obj.items()
                     if isinstance(v, torch.Tensor) and v.is_floating_point() and v.ndim > 0]
            if items:
                return items
        raise ValueError(f"{path}: expected a tensor or a state dict of floating-point tensors")
    raise ValueError(f"{path}: expected a .npy, .pt or .pth file")


def code_one(name, x, options):
    """Encode and decode one tensor and print a report; return False if the decode differs."""
    from nnc_core.metrics import snr_db
    from nnc_core.tensor import decode, encode_with_reconstruction

    x = np.ascontiguousarray(x)
    t0 = time.perf_counter()
    bitstream, recon = encode_with_reconstruction(x, **options)
    t1 = time.perf_counter()
    y = decode(bitstream)
    t2 = time.perf_counter()

    exact = (y.shape == np.shape(recon) and np.array_equal(y, recon))
    bits_per_element = 8.0 * len(bitstream) / max(x.size, 1)
    print(f"{name}")
    print(f"  shape            {tuple(x.shape)} ({x.dtype})")
    print(f"  original         {x.nbytes} bytes")
    print(f"  coded            {len(bitstream)} bytes ({x.nbytes / max(len(bitstream), 1):.1f}x smaller)")
    print(f"  bits per element {bits_per_element:.3f}")
    print(f"  SNR              {snr_db(x, y):.2f} dB")
    print(f"  encode           {t1 - t0:.3f} s")
    print(f"  decode           {t2 - t1:.3f} s")
    print(f"  decode == encoder reconstruction: {'yes' if exact else 'NO'}")
    return exact


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Code tensors with the NNC tensor API and report size, SNR and speed.",
        epilog="Default tensors: a 1000x1000 Gaussian (std 0.05) and a trained Fashion-MNIST MLP weight.",
    )
    parser.add_argument("--qp", type=int, default=-32,
                        help="quantization parameter of weight tensors (default: %(default)s); "
                             "step size 2^(qp/4) for qp_density 2, smaller is finer")
    parser.add_argument("--no_dq", action="store_true",
                        help="uniform scalar quantization instead of dependent (trellis) quantization")
    parser.add_argument("--tensor", metavar="PATH",
                        help="code this tensor (.npy, or .pt/.pth with a tensor or state dict) "
                             "instead of the default ones")
    args = parser.parse_args(argv)

    options = {"qp": args.qp, "use_dq": not args.no_dq}
    if args.tensor:
        tensors = load_tensors(args.tensor)
    else:
        if not os.path.exists(DEFAULT_WEIGHT):
            parser.error(f"{DEFAULT_WEIGHT} is missing; make it with example/train_weights.py")
        rng = np.random.default_rng(0)
        tensors = [
            ("gaussian 1000x1000, std 0.05", (rng.standard_normal((1000, 1000)) * 0.05).astype(np.float32)),
            ("Fashion-MNIST MLP fc1.weight (example/weights/fmnist_mlp_fc1.npy)", np.load(DEFAULT_WEIGHT)),
        ]

    print(f"options: {options}")
    failed = [name for name, x in tensors if not code_one(name, x, options)]
    if failed:
        print(f"error: decode(encode(x)) differs from the encoder's reconstruction for: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
