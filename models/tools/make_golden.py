"""Create the golden fixtures in tests/golden/ for the Rust tests (CI never needs torch;
the outputs are committed).

    python models/tools/make_golden.py            # from the repository root

Needs: torch, torchvision, safetensors, numpy, pillow; the Debian packages
dataset-fashion-mnist and python3-skimage(-lib) for the data.

Outputs (tests/golden/):
  fmnist_inputs.npy (64,1,28,28) f32, fmnist_labels.npy (64,) i64,
  fmnist_logits_torch.npy (64,10) f32, fmnist_logits_f64.npy (64,10) f64, fmnist_accuracy.json
  vimti_random.safetensors, vimti_input.npy (2,3,224,224) f32,
  vimti_logits_torch.npy (2,1000) f32, vimti_logits_f64.npy (2,1000) f64
  preprocess/<name>.npy (3,224,224) f32, preprocess/<name>_gray28.npy (1,28,28) f32,
  preprocess/manifest.json
  and the features goldens of make_features_golden.py
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, features
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file
from torchvision import transforms
from torchvision.transforms import InterpolationMode

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(TOOLS, '..', '..'))
FM = os.path.join(ROOT, 'models', 'fashion-mnist')
OUT = os.path.join(ROOT, 'tests', 'golden')
sys.path.insert(0, TOOLS)
sys.path.insert(0, FM)
import make_features_golden                 # noqa: E402
import vim_numpy_ref as ref                  # noqa: E402
import fmnist_data as fd                     # noqa: E402
from vim_torch import VisionMamba, vim_fmnist   # noqa: E402

PHOTOS = ['astronaut.png', 'coffee.png', 'chelsea.png', 'rocket.jpg', 'motorcycle_left.png',
          'hubble_deep_field.jpg']
GRAY_PHOTO = 'chelsea.png'
IMNET_MEAN, IMNET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def npsave(name, arr):
    arr = np.ascontiguousarray(arr)
    assert arr.dtype.byteorder in ('<', '=', '|')
    np.save(os.path.join(OUT, name), arr)


def find_skimage_data():
    out = subprocess.run("dpkg -L python3-skimage-lib python3-skimage 2>/dev/null",
                         shell=True, capture_output=True, text=True).stdout.split()
    found = {}
    for p in out:
        if '/skimage/data/' in p and os.path.basename(p) in PHOTOS:
            found[os.path.basename(p)] = p
    missing = [p for p in PHOTOS if p not in found]
    assert not missing, 'skimage photos not found: %s' % missing
    return found


# ------------------------------------------------------------------ Fashion-MNIST
def fmnist_goldens():
    st = os.path.join(FM, 'vim_fmnist.safetensors')
    sd = load_file(st)
    model = vim_fmnist(scan_impl='fast')
    model.load_state_dict(sd)
    model.eval()
    xte, yte = fd.load('test')

    inputs = fd.normalize_u8(xte[:64])
    # 1) same numbers as the torchvision eval transform on the PIL image
    tv = transforms.Compose([transforms.Resize(28, interpolation=InterpolationMode.BICUBIC),
                             transforms.CenterCrop(28), transforms.ToTensor(),
                             transforms.Normalize((fd.MEAN,), (fd.STD,))])
    tvx = torch.stack([tv(Image.fromarray(xte[i], mode='L')) for i in range(64)])
    assert torch.equal(tvx, inputs), 'normalize_u8 != torchvision eval transform'
    # 2) and as plain IEEE float32 arithmetic (what the Rust runtime does)
    npx = ((xte[:64].astype(np.float32) / np.float32(255)) - np.float32(fd.MEAN)) / np.float32(fd.STD)
    assert np.array_equal(npx[:, None], inputs.numpy()), 'normalize_u8 != f32 formula'
    print('fmnist inputs: torchvision transform == f32 formula (bit-exact)')

    with torch.no_grad():
        logits = model(inputs).numpy()
    sd64 = {k: v.double().numpy() for k, v in sd.items()}
    logits64 = np.stack([ref.vim_forward(img, sd64, 4, stride=4)
                         for img in inputs.double().numpy()])
    print('fmnist logits torch-f32 vs numpy-f64: max|d|/max|ref| = %.3e' % rel(logits, logits64))
    srt = np.sort(logits, 1)
    print('fmnist first-64 smallest top1-top2 logit margin: %.4f' % (srt[:, -1] - srt[:, -2]).min())
    assert (logits.argmax(1) == logits64.argmax(1)).all()
    npsave('fmnist_inputs.npy', inputs.numpy().astype('<f4'))
    npsave('fmnist_labels.npy', yte[:64].astype('<i8'))
    npsave('fmnist_logits_torch.npy', logits.astype('<f4'))
    npsave('fmnist_logits_f64.npy', logits64.astype('<f8'))

    # full test set accuracy with the shipped weights, pure-torch scan
    c1 = c5 = 0
    with torch.no_grad():
        for s in range(0, len(yte), 500):
            lg = model(fd.normalize_u8(xte[s:s + 500]))
            t = torch.as_tensor(yte[s:s + 500])
            top5 = lg.topk(5, 1).indices
            c1 += int((top5[:, 0] == t).sum())
            c5 += int((top5 == t[:, None]).any(1).sum())
    acc = {'count': int(len(yte)), 'correct': c1, 'top1': c1 / len(yte), 'correct_top5': c5,
           'top5': c5 / len(yte),
           'weights': 'models/fashion-mnist/vim_fmnist.safetensors',
           'transform': 'v = (f32(p)/255 - 0.2860)/0.3530 (torchvision Resize(28,bicubic) + '
                        'CenterCrop(28) + ToTensor + Normalize; identity resize/crop)',
           'top1_correct_of_first64': int((logits.argmax(1) == yte[:64]).sum())}
    rj = os.path.join(FM, 'train_result.json')
    if os.path.exists(rj):
        r = json.load(open(rj))
        k = 'ema_top1_correct' if r['shipped'] == 'ema' else 'model_top1_correct'
        acc['train_py_reported_correct'] = r[k]
        print('accuracy: torch %d / train.py %d' % (c1, r[k]))
        assert r[k] == c1, 'accuracy mismatch with train.py'
    with open(os.path.join(OUT, 'fmnist_accuracy.json'), 'w') as f:
        json.dump(acc, f, indent=1)
    print('fmnist accuracy:', acc)
    return model


# ------------------------------------------------------------------ Vim-Ti shaped random
def vimti_goldens():
    sd = ref.random_state_dict(Dm=192, depth=2, L=197, ncls=1000, seed=0)
    sd32 = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in sd.items()}
    meta = {'img_size': '224', 'resize': '256', 'crop': '224', 'interpolation': 'bicubic',
            'mean': '0.485,0.456,0.406', 'std': '0.229,0.224,0.225', 'channels': '3',
            'patch_size': '16', 'stride': '16', 'embed_dim': '192', 'depth': '2',
            'num_classes': '1000',
            'source': 'vimvq models/tools/make_golden.py: vim_numpy_ref.random_state_dict('
                      'Dm=192, depth=2, L=197, ncls=1000, seed=0) rounded to float32'}
    np_save_file(sd32, os.path.join(OUT, 'vimti_random.safetensors'), metadata=meta)
    model = VisionMamba(img_size=224, patch_size=16, stride=16, depth=2, embed_dim=192,
                        channels=3, num_classes=1000, scan_impl='fast')
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd32.items()})
    model.eval()
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        lt = model(torch.from_numpy(x)).numpy()
    sd64 = {k: v.astype(np.float64) for k, v in sd32.items()}
    l64 = np.stack([ref.vim_forward(img, sd64, 2, stride=16) for img in x.astype(np.float64)])
    r = rel(lt, l64)
    print('vimti logits torch-f32 vs numpy-f64: max|d|/max|ref| = %.3e  (max|d| %.3e)' % (
        r, np.abs(lt - l64).max()))
    assert (lt.argmax(1) == l64.argmax(1)).all()
    npsave('vimti_input.npy', x.astype('<f4'))
    npsave('vimti_logits_torch.npy', lt.astype('<f4'))
    npsave('vimti_logits_f64.npy', l64.astype('<f8'))
    return model, r


# ------------------------------------------------------------------ preprocessing
def preprocess_goldens(vimti, fmodel):
    pdir = os.path.join(OUT, 'preprocess')
    os.makedirs(pdir, exist_ok=True)
    paths = find_skimage_data()
    resize = transforms.Resize(256, interpolation=InterpolationMode.BICUBIC)
    tf = transforms.Compose([resize, transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(IMNET_MEAN, IMNET_STD)])
    gray_resize = transforms.Resize(32, interpolation=InterpolationMode.BICUBIC)
    gtf = transforms.Compose([gray_resize, transforms.CenterCrop(28), transforms.ToTensor(),
                              transforms.Normalize((fd.MEAN,), (fd.STD,))])
    entries = []
    for fname in PHOTOS:
        p = paths[fname]
        name = os.path.splitext(fname)[0]
        raw = Image.open(p)
        fmt, mode, size = raw.format, raw.mode, raw.size
        img = raw.convert('RGB')
        t = tf(img)
        assert t.shape == (3, 224, 224) and t.dtype == torch.float32
        npsave('preprocess/%s.npy' % name, t.numpy().astype('<f4'))
        with torch.no_grad():
            top = vimti(t[None])[0]
        e = {'name': name, 'file': 'preprocess/%s.npy' % name, 'path': p, 'format': fmt,
             'mode': mode, 'original_size_wh': list(size),
             'resized_size_wh': list(resize(img).size),
             'decoded_rgb_sha256': hashlib.sha256(np.asarray(img).tobytes()).hexdigest(),
             'file_sha256': hashlib.sha256(open(p, 'rb').read()).hexdigest(),
             'vimti_random_top1': int(top.argmax()), 'vimti_random_top1_logit': float(top.max()),
             'vimti_random_top1_margin': float(top.topk(2).values[0] - top.topk(2).values[1])}
        if fmt == 'JPEG':
            e['jpeg_subsampling'] = {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}.get(
                __import__('PIL.JpegImagePlugin', fromlist=['x']).get_sampling(raw), 'other')
        if fname == GRAY_PHOTO:
            g = img.convert('L')
            gt = gtf(g)
            assert gt.shape == (1, 28, 28)
            npsave('preprocess/%s_gray28.npy' % name, gt.numpy().astype('<f4'))
            with torch.no_grad():
                fl = fmodel(gt[None])[0]
            e['gray28'] = {
                'file': 'preprocess/%s_gray28.npy' % name,
                'pipeline': "Image.open(p).convert('RGB').convert('L') -> Resize(32, BICUBIC) -> "
                            "CenterCrop(28) -> ToTensor() -> Normalize((0.2860,), (0.3530,))",
                'resized_size_wh': list(gray_resize(g).size),
                'fmnist_top1': int(fl.argmax()), 'fmnist_top1_label': fd.LABELS[int(fl.argmax())],
                'fmnist_top1_margin': float(fl.topk(2).values[0] - fl.topk(2).values[1])}
        entries.append(e)
        print('preprocess', name, size, e['resized_size_wh'], 'top1', e['vimti_random_top1'])
    manifest = {
        'pipeline': "PIL.Image.open(p).convert('RGB') -> transforms.Resize(256, "
                    "interpolation=InterpolationMode.BICUBIC) -> CenterCrop(224) -> ToTensor() -> "
                    "Normalize((0.485,0.456,0.406),(0.229,0.224,0.225)); saved as float32 (3,224,224)",
        'model_for_top1': 'tests/golden/vimti_random.safetensors (torch, float32)',
        'versions': {'torch': torch.__version__, 'torchvision': torchvision.__version__,
                     'PIL': PIL.__version__, 'numpy': np.__version__,
                     'libjpeg_turbo': features.version('libjpeg_turbo'),
                     'zlib': features.version('zlib')},
        'photos': entries,
    }
    with open(os.path.join(pdir, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)


def main():
    import argparse
    global FM, OUT
    ap = argparse.ArgumentParser()
    ap.add_argument('--fm-dir', default=FM, help='dir with vim_fmnist.safetensors')
    ap.add_argument('--out', default=OUT)
    ap.add_argument('--threads', default=2, type=int)
    a = ap.parse_args()
    FM, OUT = a.fm_dir, a.out
    torch.set_num_threads(a.threads)
    os.makedirs(OUT, exist_ok=True)
    fmodel = fmnist_goldens()
    vimti, _ = vimti_goldens()
    preprocess_goldens(vimti, fmodel)
    make_features_golden.main()
    tot = 0
    for dp, _, fs in os.walk(OUT):
        for f in sorted(fs):
            s = os.path.getsize(os.path.join(dp, f))
            tot += s
            print('%9d  %s' % (s, os.path.relpath(os.path.join(dp, f), ROOT)))
    print('total %.2f MB' % (tot / 1e6))


if __name__ == '__main__':
    main()
