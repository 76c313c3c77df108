"""Generate the tiny checkpoint fixtures used by `crates/vimvq-pack/tests/import.rs`.

Run from this directory with PyTorch and safetensors installed:

    python make_fixtures.py

Everything is deterministic (fixed seed); the outputs are committed, so the Rust tests need no
Python. The model is a tiny random Vision Mamba with the exact hustvl/Vim state-dict names
(the names docs/FORMAT.md §Tensor schema lists):

    D=8, depth=2, channels=3, patch=4, stride=2 (overlapping), img=8 -> grid 3, P=9, L=10,
    E=16, N=4 (d_state), R=1, K=4, 2 classes.

Files written:

* `tiny_full.pth`      hustvl `main.py`-style checkpoint: {'model', 'optimizer' (AdamW state after
                       one step), 'lr_scheduler', 'epoch', 'model_ema', 'scaler': 'none',
                       'args': argparse.Namespace(...)}. model_ema == model * 0.5 exactly.
* `tiny_bare.pth`      `torch.save(model.state_dict())`.
* `tiny_views.pth`     the same values stored awkwardly: a transposed (non-contiguous) tensor, a
                       storage offset, two tensors sharing one storage, a stride-0 (expanded)
                       tensor, f16 / bf16 / f64 storages, and one `_rebuild_tensor_v3` tensor
                       over an `UntypedStorage`. All values are exactly representable in each
                       dtype, so every file loads to bit-identical f32 tensors.
* `tiny.safetensors`   the same state dict, with `__metadata__` (img_size, resize, ...).
"""
import argparse
import collections
import math
import os

import torch
from safetensors.torch import save_file

D, DEPTH, C, PATCH, STRIDE, IMG, N, K, CLASSES = 8, 2, 3, 4, 2, 8, 4, 4, 2
E = 2 * D
R = math.ceil(D / 16)
GRID = (IMG - PATCH) // STRIDE + 1
L = GRID * GRID + 1

HERE = os.path.dirname(os.path.abspath(__file__))


def state_dict():
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    sd = collections.OrderedDict()
    sd["cls_token"] = rnd(1, 1, D)
    sd["pos_embed"] = rnd(1, L, D)
    sd["patch_embed.proj.weight"] = rnd(D, C, PATCH, PATCH)
    sd["patch_embed.proj.bias"] = rnd(D)
    # stored as f16 in tiny_views.pth: keep it exactly representable
    sd["head.weight"] = rnd(CLASSES, D).half().float()
    sd["head.bias"] = rnd(CLASSES)
    for i in range(DEPTH):
        p = f"layers.{i}."
        a_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1))
        sd[p + "mixer.A_log"] = a_log.clone()
        sd[p + "mixer.D"] = torch.ones(E)
        sd[p + "mixer.A_b_log"] = a_log + 0.25 * rnd(E, N)
        sd[p + "mixer.D_b"] = rnd(E)
        sd[p + "mixer.in_proj.weight"] = rnd(2 * E, D)
        sd[p + "mixer.conv1d.weight"] = rnd(E, 1, K)
        sd[p + "mixer.conv1d.bias"] = rnd(E)
        # layer 1's x_proj is stored as bf16 in tiny_views.pth
        sd[p + "mixer.x_proj.weight"] = rnd(R + 2 * N, E).bfloat16().float()
        sd[p + "mixer.dt_proj.weight"] = rnd(E, R)
        sd[p + "mixer.dt_proj.bias"] = rnd(E)
        sd[p + "mixer.conv1d_b.weight"] = rnd(E, 1, K)
        sd[p + "mixer.conv1d_b.bias"] = rnd(E)
        sd[p + "mixer.x_proj_b.weight"] = rnd(R + 2 * N, E)
        sd[p + "mixer.dt_proj_b.weight"] = rnd(E, R)
        sd[p + "mixer.dt_proj_b.bias"] = rnd(E)
        sd[p + "mixer.out_proj.weight"] = rnd(D, E)
        sd[p + "norm.weight"] = 1.0 + 0.1 * rnd(D)
    sd["norm_f.weight"] = 1.0 + 0.1 * rnd(D)
    # like nn.Module.state_dict(): an attribute, pickled with BUILD after the items
    sd._metadata = collections.OrderedDict(
        [("", {"version": 1})] + [(f"layers.{i}", {"version": 1}) for i in range(DEPTH)])
    return sd


def hustvl_args():
    # A subset of hustvl/Vim main.py's argparse fields, with its defaults where they exist.
    return argparse.Namespace(
        batch_size=64, epochs=300, bce_loss=False, unscale_lr=False,
        model="vim_tiny_fixture", input_size=IMG, drop=0.0, drop_path=0.1,
        model_ema=True, model_ema_decay=0.99996, model_ema_force_cpu=False,
        opt="adamw", opt_eps=1e-8, opt_betas=[0.9, 0.999], clip_grad=None, momentum=0.9,
        weight_decay=0.05, sched="cosine", lr=5e-4, lr_noise=None, warmup_lr=1e-6,
        min_lr=1e-5, color_jitter=0.3, aa="rand-m9-mstd0.5-inc1", smoothing=0.1,
        train_interpolation="bicubic", repeated_aug=True, mixup=0.8, cutmix=1.0,
        cutmix_minmax=None, data_path="/datasets/imagenet", data_set="IMNET",
        eval_crop_ratio=0.875, nb_classes=CLASSES, output_dir="./output", device="cuda",
        seed=0, resume="", start_epoch=0, eval=False, num_workers=10, pin_mem=True,
        distributed=False, world_size=1, dist_url="env://", if_amp=False, no_amp=True,
    )


def optimizer_state(sd):
    params = [torch.nn.Parameter(t.clone()) for t in sd.values()]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05)
    g = torch.Generator().manual_seed(99)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    return opt.state_dict()


class V3Tensor:
    """Pickles as torch's `_rebuild_tensor_v3(UntypedStorage, offset, size, stride, ...)` form."""

    def __init__(self, t):
        self.t = t.contiguous()

    def __reduce__(self):
        t = self.t
        return (torch._utils._rebuild_tensor_v3,
                (t.untyped_storage(), t.storage_offset(), t.size(), t.stride(), False,
                 collections.OrderedDict(), t.dtype))


def views_dict(sd):
    out = collections.OrderedDict()
    for k, v in sd.items():
        out[k] = v.clone()
    # non-contiguous: (2E, D) with strides (1, 2E)
    w = sd["layers.0.mixer.in_proj.weight"]
    out["layers.0.mixer.in_proj.weight"] = w.t().contiguous().t()
    assert not out["layers.0.mixer.in_proj.weight"].is_contiguous()
    # storage offset 7 into a larger storage
    pos = sd["pos_embed"]
    buf = torch.full((7 + pos.numel() + 3,), -1.0)
    buf[7:7 + pos.numel()] = pos.flatten()
    out["pos_embed"] = buf[7:7 + pos.numel()].view(pos.shape)
    # two tensors in one storage
    both = torch.cat([sd["layers.0.mixer.dt_proj.bias"], sd["layers.0.mixer.dt_proj_b.bias"]])
    out["layers.0.mixer.dt_proj.bias"] = both[:E]
    out["layers.0.mixer.dt_proj_b.bias"] = both[E:]
    # stride 0 (an expanded one-element storage); the values are all ones
    assert torch.equal(sd["layers.0.mixer.D"], torch.ones(E))
    out["layers.0.mixer.D"] = torch.ones(1).expand(E)
    # other storage dtypes
    out["head.weight"] = sd["head.weight"].half()
    out["layers.1.mixer.x_proj.weight"] = sd["layers.1.mixer.x_proj.weight"].bfloat16()
    out["norm_f.weight"] = sd["norm_f.weight"].double()
    out["layers.1.mixer.A_log"] = V3Tensor(sd["layers.1.mixer.A_log"])
    return out


def main():
    torch.manual_seed(0)
    sd = state_dict()
    ema = collections.OrderedDict((k, v * 0.5) for k, v in sd.items())
    full = {
        "model": sd,
        "optimizer": optimizer_state(sd),
        "lr_scheduler": {"t_initial": 300, "warmup_t": 5, "base_values": [5e-4],
                         "noise_range_t": None, "cycle_mul": 1.0},
        "epoch": 3,
        "model_ema": ema,
        "scaler": "none",
        "args": hustvl_args(),
    }
    torch.save(full, os.path.join(HERE, "tiny_full.pth"))
    torch.save(sd, os.path.join(HERE, "tiny_bare.pth"))
    torch.save(views_dict(sd), os.path.join(HERE, "tiny_views.pth"))
    meta = {
        "img_size": str(IMG), "resize": "9", "crop": str(IMG), "interpolation": "bilinear",
        "mean": "0.5,0.25,0.125", "std": "0.5,0.5,0.25", "channels": str(C),
        "labels": "cat\ndog",
    }
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(HERE, "tiny.safetensors"),
              metadata=meta)
    for name in ("tiny_full.pth", "tiny_bare.pth", "tiny_views.pth", "tiny.safetensors"):
        print(name, os.path.getsize(os.path.join(HERE, name)))


if __name__ == "__main__":
    main()
