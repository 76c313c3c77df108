"""Writes the bundled calibration set: the first 256 Fashion-MNIST *train* images as 28x28 grayscale PNGs in
ImageFolder layout (calib/<class>/<train index>.png). Needs numpy + pillow and Debian's dataset-fashion-mnist.
None of these images is in the test set."""
import gzip
import pathlib

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
    out = pathlib.Path(__file__).parent / "calib"
    images = idx(SRC / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = idx(SRC / "train-labels-idx1-ubyte.gz", 8)
    for i in range(COUNT):
        d = out / CLASSES[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(d / f"{i:05d}.png", optimize=True)
    print(f"wrote {COUNT} images to {out}")


if __name__ == "__main__":
    main()
