"""Train a small MLP on Fashion-MNIST and save its weights for the coding examples.

The model is a 784-256-10 multilayer perceptron with a ReLU, trained with Adam for two
epochs on the CPU (well under a minute on two cores). Two files are written:

- ``example/weights/fmnist_mlp_fc1.npy``: the first layer's weight, float32, shape (256, 784)
- ``example/weights/fmnist_mlp.pt``: the full state dict

Fashion-MNIST is read from the IDX files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``); ``--data`` points elsewhere, e.g. at the
same four ``*-ubyte.gz`` files downloaded from the dataset's home page.

    env/bin/python example/train_weights.py
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its stored type."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} elements, found {array.size}")
    return array.reshape(shape)


def load_split(data_dir, split):
    """Return (images float32 in [0, 1] of shape (N, 784), labels int64 of shape (N,))."""
    image_file, label_file = FILES[split]
    images = read_idx(os.path.join(data_dir, image_file))
    labels = read_idx(os.path.join(data_dir, label_file))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


class MLP(nn.Module):
    def __init__(self, hidden=256, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@torch.no_grad()
def accuracy(model, x, y, batch=2000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=os.path.join(HERE, "weights"), help="output folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    missing = [f for pair in FILES.values() for f in pair if not os.path.exists(os.path.join(args.data, f))]
    if missing:
        sys.exit(f"Fashion-MNIST not found in {args.data} (missing {', '.join(missing)}); "
                 "install it with `apt-get install dataset-fashion-mnist` or pass --data")

    torch.manual_seed(args.seed)
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")

    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / len(order):.4f}, "
              f"test accuracy {accuracy(model, x_test, y_test):.4f}")
    print(f"trained in {time.perf_counter() - start:.1f} s")

    acc = accuracy(model, x_test, y_test)
    print(f"test accuracy: {acc * 100:.2f}%")

    os.makedirs(args.out, exist_ok=True)
    fc1 = model.fc1.weight.detach().numpy().astype(np.float32)
    np.save(os.path.join(args.out, "fmnist_mlp_fc1.npy"), fc1)
    torch.save(model.state_dict(), os.path.join(args.out, "fmnist_mlp.pt"))
    print(f"saved fc1 weight {fc1.shape} and the state dict to {args.out}")


if __name__ == "__main__":
    main()
