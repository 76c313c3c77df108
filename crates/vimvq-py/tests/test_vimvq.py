"""The Python package against the vimvq CLI on the same models and images: top-1, logits and
features equal, errors, thread-count independence, memory stability."""
import json
import os

import cv2
import numpy as np
import pytest

import vimvq
from conftest import FM, photos, samples


def read_rgb(path):
    """H×W×3 uint8 RGB (or H×W for a gray file), as picamera2 or OpenCV after BGR→RGB give."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def cli_json(cli, model, images):
    return json.loads(cli('run', model, *images, '--json', '--topk', '3'))['outputs']


def test_samples_top1_and_logits_equal_cli(cli, fmnist):
    m = vimvq.Model(fmnist)
    imgs = samples()
    expected = {}
    with open(os.path.join(FM, 'samples', 'expected.txt')) as f:
        for line in f:
            if not line.startswith('#'):
                name, _, torch_top1 = line.split('\t')[:3]
                expected[name] = int(torch_top1)
    for path, ref in zip(imgs, cli_json(cli, fmnist, imgs)):
        top = m.classify(read_rgb(path), topk=3)
        assert [t[0] for t in top] == [t['class'] for t in ref['top']], path
        assert [t[1] for t in top] == [t['label'] for t in ref['top']], path
        np.testing.assert_array_equal([t[2] for t in top],
                                      np.float32([t['prob'] for t in ref['top']]))
        np.testing.assert_array_equal(m.logits(read_rgb(path)), np.float32(ref['logits']))
        assert top[0][0] == expected[os.path.basename(path)], path


def test_photos_top1_equal_cli(cli, vimti):
    found = photos()
    if not found:
        pytest.skip('python3-skimage photos not installed')
    m = vimvq.Model(vimti)
    for path, ref in zip(found, cli_json(cli, vimti, found)):
        logits = m.logits(read_rgb(path))
        assert int(np.argmax(logits)) == ref['top'][0]['class'], path
        if path.endswith('.png'):  # lossless: the very same pixels as the CLI's decoder
            np.testing.assert_array_equal(logits, np.float32(ref['logits']))


def test_features_equal_cli_npy(cli, fmnist, vimti, tmp_path):
    for model, imgs in [(fmnist, samples()), (vimti, [p for p in photos() if p.endswith('.png')])]:
        if not imgs:
            continue
        out, tok = tmp_path / 'f.npy', tmp_path / 't.npy'
        cli('run', model, *imgs, '--features', out, '--tokens', tok)
        want, tokens = np.load(out), np.load(tok)
        m = vimvq.Model(model)
        d = m.info['config']['embed_dim']
        assert want.shape == (len(imgs), d) and want.dtype == np.float32
        assert tokens.shape == (len(imgs), m.info['config']['seq_len'], d)
        for i, path in enumerate(imgs):
            f = m.features(read_rgb(path))
            assert f.dtype == np.float32 and f.shape == (d,)
            np.testing.assert_array_equal(f, want[i])
            # The pooled vector is the class token's row of the token states.
            pos = (m.info['config']['seq_len'] - 1) // 2
            np.testing.assert_array_equal(tokens[i, pos], want[i])


def test_stream_features_and_i420_equal_cli(cli, vimti):
    imgs = [p for p in photos() if p.endswith('.png')] or samples()
    rgb = cv2.resize(read_rgb(imgs[0]), (64, 48))
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    m = vimvq.Model(vimti)
    line = json.loads(cli('stream', vimti, '--size', '64x48', '--format', 'rgb24', '--features',
                          '--topk', '3', stdin=rgb.tobytes()).splitlines()[0])
    np.testing.assert_array_equal(m.features(rgb), np.float32(line['features']))
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    line = json.loads(cli('stream', vimti, '--size', '64x48', '--format', 'i420', '--topk', '3',
                          stdin=i420.tobytes()).splitlines()[0])
    for got in (m.classify_i420(i420.tobytes(), 64, 48, topk=3),
                m.classify_i420(i420, 64, 48, topk=3)):
        assert [t[0] for t in got] == [t['class'] for t in line['top']]
        np.testing.assert_array_equal([t[2] for t in got], np.float32([t['prob'] for t in line['top']]))


def test_strided_arrays_equal_contiguous(vimti):
    m = vimvq.Model(vimti)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    bgr_view = big[5:80, 7:120, ::-1]          # a crop with BGR→RGB by slicing
    assert not bgr_view.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(m.logits(bgr_view), m.logits(np.ascontiguousarray(bgr_view)))


def test_threads_give_identical_results(vimti, fmnist):
    img = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for path in (vimti, fmnist):
        ref = vimvq.Model(path).logits(img)
        for t in (2, 3, 4):
            m = vimvq.Model(path, threads=t)
            np.testing.assert_array_equal(m.logits(img), ref)
            np.testing.assert_array_equal(m.features(img), vimvq.Model(path).features(img))


def test_info(fmnist):
    info = vimvq.Model(fmnist, threads=2).info
    c = info['config']
    assert (c['embed_dim'], c['depth'], c['img_size'], c['channels'], c['num_classes']) == \
        (128, 4, 28, 1, 10)
    assert info['file_bytes'] == os.path.getsize(fmnist)
    assert info['bits'] == 32.0 and info['threads'] == 2
    assert info['scratch_bytes'] > 0 and len(info['labels']) == 10


def test_errors(fmnist, tmp_path):
    m = vimvq.Model(fmnist)
    with pytest.raises(OSError, match='no such file'):
        vimvq.Model(str(tmp_path / 'missing.vimvq'))
    bad = tmp_path / 'bad.vimvq'
    bad.write_bytes(b'VIMVQ' + b'\0' * 100)
    with pytest.raises(ValueError, match='invalid .vimvq model'):
        vimvq.Model(str(bad))
    with pytest.raises(ValueError, match='threads'):
        vimvq.Model(fmnist, threads=0)
    with pytest.raises(ValueError, match='uint8'):
        m.classify(np.zeros((28, 28, 3), np.float32))
    with pytest.raises(ValueError, match='shape'):
        m.classify(np.zeros((28, 28, 4), np.uint8))
    with pytest.raises(ValueError):
        m.classify(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match='topk'):
        m.classify(np.zeros((28, 28, 3), np.uint8), topk=0)
    with pytest.raises(ValueError):
        m.classify_i420(b'\0' * 10, 28, 28)
    with pytest.raises(ValueError, match='uint8'):
        m.classify('not an image')
    with pytest.raises(ValueError, match='unexpected argument'):
        vimvq.import_checkpoint(os.path.join(FM, 'vim_fmnist.safetensors'),
                                str(tmp_path / 'x.vimvq'), no_such_option=3)
    with pytest.raises(OSError, match='no such file'):
        vimvq.import_checkpoint(str(tmp_path / 'missing.pth'), str(tmp_path / 'x.vimvq'))
    assert not os.path.exists(tmp_path / 'x.vimvq')
    # The model still works after every error.
    assert m.classify(np.zeros((28, 28, 3), np.uint8))[0][0] in range(10)


def test_pack_equals_cli(cli, tmp_path):
    ck = os.path.join(FM, 'vim_fmnist.safetensors')
    calib = os.path.join(FM, 'calib')
    py_out, cli_out = tmp_path / 'py.vimvq', tmp_path / 'cli.vimvq'
    vimvq.pack(ck, str(py_out), calib, bits=2, method='kmeans', calib_count=8, threads=1)
    cli('pack', ck, '-o', cli_out, '--calib', calib, '--bits', 2, '--method', 'kmeans',
        '--calib-count', 8, '--threads', 1)
    assert py_out.read_bytes() == cli_out.read_bytes()
    m = vimvq.Model(str(py_out))
    assert 2 < m.info['bits'] < 32
    assert len(m.classify(read_rgb(samples()[0]))) == 5


def rss_kib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def test_no_leak_over_1000_calls(fmnist):
    m = vimvq.Model(fmnist, threads=2)
    img = read_rgb(samples()[0])
    i420 = np.zeros(28 * 28 * 3 // 2, np.uint8)
    for _ in range(100):
        m.classify(img), m.features(img), m.classify_i420(i420, 28, 28)
    before = rss_kib()
    for _ in range(1000):
        m.classify(img), m.features(img), m.classify_i420(i420, 28, 28)
    grown = rss_kib() - before
    assert grown < 1024, 'RSS grew by %d KiB over 1000 calls' % grown
