"""Writes the bundled calibration set: the first 256 Fashion-MNIST *train* images as 28x28 grayscale PNGs in
ImageFolder layout (calib/<class>/<train index>.png). Needs numpy + pillow and Debian's dataset-fashion-mnist.
None of these images is in the test set. `python3 export_calib.py COUNT OUT_DIR` writes the first COUNT
instead, to OUT_DIR (the larger calibration sets of docs/RESULTS.md)."""
import gzip
import pathlib
import sys

import numpy as np
from PIL import Image

SRC = pathlib.Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["0-tshirt-top", "1-trouser", "2-pullover", "3-dress", "4-coat",
           "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot"]
COUNT = 256


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else pathlib.Path(__file__).parent / "calib"
    count = int(sys.argv[1]) if len(sys.argv) > 1 else COUNT
    images = idx(SRC / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = idx(SRC / "train-labels-idx1-ubyte.gz", 8)
    for i in range(count):
        d = out / CLASSES[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(d / f"{i:05d}.png", optimize=True)
    print(f"wrote {count} images to {out}")


if __name__ == "__main__":
    main()
