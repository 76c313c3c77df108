"""Fashion-MNIST loading (Debian package `dataset-fashion-mnist`, gzipped IDX files) and the
eval transform shared by train.py and models/tools/make_golden.py."""
import gzip
import os
import struct

import numpy as np
import torch

DATA_DIR = os.environ.get('FMNIST_DIR', '/usr/share/datasets/fashion-mnist')
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
MEAN, STD = 0.2860, 0.3530
LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
          'Bag', 'Ankle boot']


def slug(label):
    return label.lower().replace('/', '-').replace(' ', '-')


def _read_idx(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack('>HBB', data[:4])
    assert zero == 0 and dtype == 0x08, path           # unsigned byte
    shape = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape).copy()


def load(split):
    """Returns (images uint8 (n, 28, 28), labels int64 (n,)) as numpy arrays."""
    fi, fl = FILES[split]
    x = _read_idx(os.path.join(DATA_DIR, fi))
    y = _read_idx(os.path.join(DATA_DIR, fl)).astype(np.int64)
    assert x.shape[0] == y.shape[0]
    return x, y


def normalize_u8(x):
    """Eval transform on uint8 (n, 28, 28) pixels -> float32 (n, 1, 28, 28).
    Same ops/order as torchvision ToTensor() + Normalize((0.2860,), (0.3530,)):
    v = (float32(p) / 255 - 0.2860f) / 0.3530f, every step rounded to float32.
    (Resize(28) + CenterCrop(28) are the identity on 28x28 images.)"""
    t = torch.as_tensor(np.ascontiguousarray(x)).unsqueeze(1).to(torch.float32).div(255)
    mean = torch.as_tensor([MEAN], dtype=torch.float32).view(1, 1, 1)
    std = torch.as_tensor([STD], dtype=torch.float32).view(1, 1, 1)
    return t.sub(mean).div(std)
