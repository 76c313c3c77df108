"""Exports of the bundled Fashion-MNIST model (called by train.py at the end).

* vim_fmnist.safetensors : shipped state dict, contiguous float32, string metadata
* vim_fmnist.pth         : hustvl/Vim main.py-style training checkpoint (torch.save, zip)
* labels.txt, samples/*.png, samples/expected.txt

`python export.py` re-creates the safetensors file, labels and samples from vim_fmnist.pth.
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fmnist_data as fd                     # noqa: E402
from vim_torch import vim_fmnist             # noqa: E402

METADATA = {
    'img_size': '28', 'resize': '28', 'crop': '28', 'interpolation': 'bicubic',
    'mean': '0.2860', 'std': '0.3530', 'channels': '1',
    'labels': '\n'.join(fd.LABELS),
    'source': 'vimvq models/fashion-mnist/train.py',
}


def clean_sd(sd):
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sd.items()}


def module_sd(module):
    """module.state_dict() as hustvl main.py / timm get_state_dict save it: an OrderedDict
    (with its `_metadata` attribute), float32 contiguous tensors."""
    sd = module.state_dict()
    for k, v in sd.items():
        assert v.dtype == torch.float32 and v.is_contiguous(), k
    return sd


def write_safetensors(sd, path):
    save_file(sd, path, metadata=METADATA)


def write_labels(outdir):
    with open(os.path.join(outdir, 'labels.txt'), 'w') as f:
        f.write('\n'.join(fd.LABELS) + '\n')


@torch.no_grad()
def write_samples(sd, outdir, n=8):
    xte, yte = fd.load('test')
    sdir = os.path.join(outdir, 'samples')
    os.makedirs(sdir, exist_ok=True)
    for f in os.listdir(sdir):
        if f.endswith('.png') or f == 'expected.txt':
            os.remove(os.path.join(sdir, f))
    model = vim_fmnist(scan_impl='fast')
    model.load_state_dict(sd)
    model.eval()
    seen, lines = set(), []
    for i in range(len(yte)):
        c = int(yte[i])
        if c in seen:
            continue
        seen.add(c)
        name = '%04d_%s.png' % (i, fd.slug(fd.LABELS[c]))
        p = os.path.join(sdir, name)
        Image.fromarray(xte[i], mode='L').save(p)
        back = np.asarray(Image.open(p))                     # re-read the PNG
        assert back.dtype == np.uint8 and back.shape == (28, 28) and (back == xte[i]).all()
        pred = int(model(fd.normalize_u8(back[None])).argmax(1))
        lines.append('%s\t%d\t%d\t%s\t%s' % (name, c, pred, fd.LABELS[c], fd.LABELS[pred]))
        if len(seen) == n:
            break
    with open(os.path.join(sdir, 'expected.txt'), 'w') as f:
        f.write('# file\ttrue_label\ttorch_top1\ttrue_name\ttop1_name\n')
        f.write('\n'.join(lines) + '\n')
    return lines


def export_all(model, ema_model, optimizer, lr_scheduler, epoch, args, result, outdir):
    shipped = ema_model if result['shipped'] == 'ema' else model
    sd = module_sd(shipped)
    ema_sd = module_sd(ema_model)
    st_path = os.path.join(outdir, 'vim_fmnist.safetensors')
    write_safetensors(sd, st_path)
    ckpt = {
        'model': sd,
        'optimizer': optimizer.state_dict(),
        'lr_scheduler': lr_scheduler.state_dict(),
        'epoch': int(epoch),
        'model_ema': ema_sd,
        'scaler': 'none',
        'args': args,
    }
    pth_path = os.path.join(outdir, 'vim_fmnist.pth')
    torch.save(ckpt, pth_path)
    # bit-identity check between the two files
    from safetensors.torch import load_file
    a = load_file(st_path)
    b = torch.load(pth_path, map_location='cpu', weights_only=False)['model']
    assert list(a) == sorted(a) and set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32 and torch.equal(a[k], b[k]), k
        assert a[k].view(torch.int32).equal(b[k].view(torch.int32)), k
    print('safetensors == pth["model"] bit-identical (%d tensors)' % len(a), flush=True)
    write_labels(outdir)
    for line in write_samples(sd, outdir):
        print('sample', line, flush=True)


if __name__ == '__main__':
    ck = torch.load(os.path.join(HERE, 'vim_fmnist.pth'), map_location='cpu', weights_only=False)
    sd = clean_sd(ck['model'])
    write_safetensors(sd, os.path.join(HERE, 'vim_fmnist.safetensors'))
    write_labels(HERE)
    for line in write_samples(sd, HERE):
        print(line)
