#!/usr/bin/env python3
"""Write the 10,000 Fashion-MNIST test images as PNGs in ImageFolder layout.

    python3 scripts/fmnist_test_png.py [OUT_DIR]      (default /tmp/fmnist-test)

Source: Debian's dataset-fashion-mnist IDX files in /usr/share/datasets/fashion-mnist.
Layout: OUT_DIR/<k>_<name>/<index>.png, so the sorted folder names are in class order (the same
layout tests/eval_fmnist.rs writes). Needs python3-numpy and python3-pil. Skips the work when
OUT_DIR already holds 10,000 PNGs.
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

SRC = "/usr/share/datasets/fashion-mnist"
LABELS = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
          "bag", "ankle-boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert raw[:3] == b"\0\0\x08", f"{path}: not an unsigned-byte IDX file"
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fmnist-test"
    if os.path.isdir(out):
        n = sum(len(fs) for _, _, fs in os.walk(out))
        if n == 10000:
            print(f"{out}: already holds 10000 images")
            return
    images = read_idx(os.path.join(SRC, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(SRC, "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    for k, name in enumerate(LABELS):
        os.makedirs(os.path.join(out, f"{k}_{name}"), exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(
            os.path.join(out, f"{y}_{LABELS[y]}", f"{i:05d}.png"))
    print(f"{out}: wrote {len(labels)} images")


if __name__ == "__main__":
    main()
