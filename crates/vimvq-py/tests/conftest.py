"""Fixtures: the repository's models imported with vimvq.import_checkpoint, and the vimvq CLI
binary (VIMVQ_BIN, else target/release/vimvq) as the reference the package must agree with."""
import json
import os
import subprocess

import pytest

import vimvq

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
FM = os.path.join(ROOT, 'models', 'fashion-mnist')
GOLDEN = os.path.join(ROOT, 'tests', 'golden')


@pytest.fixture(scope='session')
def cli():
    exe = os.environ.get('VIMVQ_BIN', os.path.join(ROOT, 'target', 'release', 'vimvq'))
    assert os.path.exists(exe), '%s missing: cargo build --release --bin vimvq' % exe

    def run(*args, stdin=None):
        r = subprocess.run([exe, *map(str, args)], input=stdin, capture_output=True, check=True)
        return r.stdout
    run.exe = exe
    return run


@pytest.fixture(scope='session')
def fmnist(tmp_path_factory):
    out = tmp_path_factory.mktemp('models') / 'fmnist.vimvq'
    vimvq.import_checkpoint(os.path.join(FM, 'vim_fmnist.safetensors'), str(out))
    return str(out)


@pytest.fixture(scope='session')
def vimti(tmp_path_factory):
    out = tmp_path_factory.mktemp('models') / 'vimti.vimvq'
    vimvq.import_checkpoint(os.path.join(GOLDEN, 'vimti_random.safetensors'), str(out))
    return str(out)


def samples():
    d = os.path.join(FM, 'samples')
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith('.png')]


def photos():
    """The photos of the preprocessing goldens (Debian's python3-skimage), if installed."""
    with open(os.path.join(GOLDEN, 'preprocess', 'manifest.json')) as f:
        paths = [p['path'] for p in json.load(f)['photos']]
    return [p for p in paths if os.path.exists(p)]
