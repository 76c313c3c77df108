"""Golden features for the Rust tests (tests/golden/; CI never needs torch): the reference
model's forward_features (the normalised cls token) and every token's state after norm_f.

    python models/tools/make_features_golden.py     # from the repository root; make_golden.py
                                                    # runs it too, after the logits goldens

Needs: torch, safetensors, numpy. Inputs are the committed fmnist_inputs.npy (first 8) and
vimti_input.npy, with the committed weights (vim_fmnist.safetensors, vimti_random.safetensors).

Outputs (tests/golden/):
  fmnist_features_torch.npy (8,D) f32, fmnist_tokens_torch.npy (8,L,D) f32,
  vimti_features_torch.npy (2,192) f32, vimti_tokens_torch.npy (2,197,192) f32
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(TOOLS, '..', '..'))
FM = os.path.join(ROOT, 'models', 'fashion-mnist')
OUT = os.path.join(ROOT, 'tests', 'golden')
sys.path.insert(0, FM)
from vim_torch import VisionMamba, vim_fmnist   # noqa: E402

FMNIST_IMAGES = 8


def save(name, arr):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(arr.astype('<f4')))


def run(model, x, name):
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(x)
        tokens = model.forward_tokens(x)
        feats = model.forward_features(x)
        logits = model(x)
    # forward = head(forward_features), and the features are the cls row of the tokens
    assert torch.equal(feats, tokens[:, model.cls_pos]), name
    assert torch.allclose(logits, model.head(feats)), name
    save('%s_features_torch.npy' % name, feats.numpy())
    save('%s_tokens_torch.npy' % name, tokens.numpy())
    print('%s: features %s, tokens %s' % (name, tuple(feats.shape), tuple(tokens.shape)))


def main():
    model = vim_fmnist(scan_impl='fast')
    model.load_state_dict(load_file(os.path.join(FM, 'vim_fmnist.safetensors')))
    x = np.load(os.path.join(OUT, 'fmnist_inputs.npy'))[:FMNIST_IMAGES]
    run(model, x, 'fmnist')

    sd = load_file(os.path.join(OUT, 'vimti_random.safetensors'))
    model = VisionMamba(img_size=224, patch_size=16, stride=16, depth=2, embed_dim=192,
                        channels=3, num_classes=1000, scan_impl='fast')
    model.load_state_dict(sd)
    run(model, np.load(os.path.join(OUT, 'vimti_input.npy')), 'vimti')


if __name__ == '__main__':
    torch.set_num_threads(2)
    main()
