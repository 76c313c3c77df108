"""Train the bundled Vim Fashion-MNIST model on CPU and export it.

    cd models/fashion-mnist
    nohup python train.py > train.log 2>&1 &

Recipe: AdamW + linear warm-up + per-iteration cosine, label smoothing 0.1, random crop
(2-px zero padding) + horizontal flip, model EMA (timm ModelEma-style), seeded.
The machine is shared, so the schedule is wall-time based: linear warm-up over
--warmup-iters iterations, then a cosine over the rest of --time-budget minutes (at most
--epochs epochs); training stops when the budget is used. The iteration count reached is
logged and stored in the checkpoint args (an iteration-based rerun: --total-iters N).
Exports (see export.py): vim_fmnist.safetensors, vim_fmnist.pth (hustvl main.py checkpoint
layout), labels.txt, samples/, train_result.json.
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fmnist_data as fd                     # noqa: E402
from vim_torch import Mamba, load_cpu_scan, vim_fmnist   # noqa: E402

MODEL_NAME = 'vim_fmnist_patch4_28_bimambav2_midclstok_div2'


def get_args(argv=None):
    p = argparse.ArgumentParser('Vim Fashion-MNIST training', add_help=True)
    p.add_argument('--model', default=MODEL_NAME)
    p.add_argument('--input-size', dest='input_size', default=28, type=int)
    p.add_argument('--patch-size', dest='patch_size', default=4, type=int)
    p.add_argument('--stride', default=4, type=int)
    p.add_argument('--embed-dim', dest='embed_dim', default=128, type=int)
    p.add_argument('--depth', default=4, type=int)
    p.add_argument('--d-state', dest='d_state', default=16, type=int)
    p.add_argument('--nb-classes', dest='nb_classes', default=10, type=int)
    p.add_argument('--batch-size', dest='batch_size', default=128, type=int)
    p.add_argument('--epochs', default=10, type=int)
    p.add_argument('--time-budget', dest='time_budget', default=47.0, type=float,
                   help='minutes for the training loop; the cosine runs over the wall time left '
                        'after warm-up and training stops when the budget is used (the machine '
                        'is shared, so its speed is not known in advance)')
    p.add_argument('--total-iters', dest='total_iters', default=0, type=int,
                   help='iteration-based schedule of this length instead of the time budget '
                        '(e.g. the iteration count logged by a previous run)')
    p.add_argument('--lr', default=2e-3, type=float)
    p.add_argument('--min-lr', dest='min_lr', default=1e-5, type=float)
    p.add_argument('--warmup-iters', dest='warmup_iters', default=200, type=int)
    p.add_argument('--weight-decay', dest='weight_decay', default=0.05, type=float)
    p.add_argument('--opt', default='adamw')
    p.add_argument('--opt-betas', dest='opt_betas', default=(0.9, 0.999), type=float, nargs=2)
    p.add_argument('--clip-grad', dest='clip_grad', default=1.0, type=float)
    p.add_argument('--smoothing', default=0.1, type=float)
    p.add_argument('--drop-path', dest='drop_path', default=0.0, type=float)
    p.add_argument('--model-ema', dest='model_ema', default=True)
    p.add_argument('--model-ema-decay', dest='model_ema_decay', default=0.997, type=float)
    p.add_argument('--sched', default='cosine')
    p.add_argument('--crop-padding', dest='crop_padding', default=2, type=int)
    p.add_argument('--hflip', default=0.5, type=float)
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--threads', default=2, type=int,
                   help='cores to use. With --workers > 1 each worker thread runs torch with 1 '
                        'intra-op thread (robust when the cores are shared with other jobs)')
    p.add_argument('--workers', default=2, type=int,
                   help='data-parallel worker threads: each computes the gradient of a slice of '
                        'the batch (torch.autograd.grad); slices are summed in a fixed order')
    p.add_argument('--scan', default='auto', choices=['auto', 'c', 'fast'],
                   help="training scan kernel: 'c' = scan_cpu.c via ctypes, 'fast' = pure torch")
    p.add_argument('--eval-crop-ratio', dest='eval_crop_ratio', default=1.0, type=float)
    p.add_argument('--mean', default=fd.MEAN, type=float)
    p.add_argument('--std', default=fd.STD, type=float)
    p.add_argument('--output-dir', dest='output_dir', default=HERE)
    p.add_argument('--no-export', dest='export', action='store_false')
    p.add_argument('--resume', default='',
                   help='continue from a checkpoint written by this script (model, model_ema and '
                        'AdamW state are loaded; a new warm-up + cosine runs with --lr)')
    p.add_argument('--train-subset', dest='train_subset', default=0, type=int,
                   help='smoke tests only: use the first N training images')
    p.add_argument('--test-subset', dest='test_subset', default=0, type=int,
                   help='smoke tests only: evaluate on the first N test images')
    return p.parse_args(argv)


class WarmupCosine:
    """lr multiplier: linear warm-up over `warmup` iterations, then cosine from 1 to min_ratio
    over `progress` in [0, 1]. progress is set by the training loop: the fraction of the
    wall-time budget used after warm-up (default), or of the iterations when --total-iters is
    given. Picklable object, so LambdaLR.state_dict() keeps its fields."""

    def __init__(self, warmup, min_ratio):
        self.warmup, self.min_ratio, self.progress = warmup, min_ratio, 0.0

    def __call__(self, it):
        if it < self.warmup:
            return (it + 1) / self.warmup
        p = min(1.0, max(0.0, self.progress))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


class ModelEma:
    """timm ModelEma (v1) semantics: ema = decay * ema + (1 - decay) * model, all state entries."""

    def __init__(self, model, decay):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            v.mul_(self.decay).add_(msd[k].detach(), alpha=1 - self.decay)


def set_scan(model, impl):
    for m in model.modules():
        if isinstance(m, Mamba):
            m.scan_impl = impl


def augment(xb, gen, pad, hflip):
    """xb: uint8 (B, 28, 28) -> float (B, 1, 28, 28) normalised, random crop with zero
    padding `pad` and horizontal flip. Padding is applied to the normalised image with the
    value of a black pixel, like RandomCrop(padding) on the PIL image before ToTensor."""
    x = fd.normalize_u8(xb)
    B, _, H, W = x.shape
    black = float(fd.normalize_u8(np.zeros((1, 1, 1), np.uint8))[0, 0, 0, 0])
    xp = F.pad(x, (pad, pad, pad, pad), value=black)
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    iy = (oy[:, None] + torch.arange(H)[None, :])                 # (B, H)
    ix = (ox[:, None] + torch.arange(W)[None, :])                 # (B, W)
    flip = torch.rand(B, generator=gen) < hflip
    ix = torch.where(flip[:, None], ix.flip(1), ix)
    bi = torch.arange(B)[:, None, None]
    out = xp[bi, 0, iy[:, :, None], ix[:, None, :]]
    return out.unsqueeze(1).contiguous()


@torch.no_grad()
def evaluate(model, x_u8, y, bs=500, impl='fast'):
    """top-1/top-5 correct counts with the pure-torch reference path (scan_impl='fast')."""
    was = [m.scan_impl for m in model.modules() if isinstance(m, Mamba)]
    set_scan(model, impl)
    model.eval()
    c1 = c5 = 0
    for s in range(0, len(y), bs):
        logits = model(fd.normalize_u8(x_u8[s:s + bs]))
        t = torch.as_tensor(y[s:s + bs])
        top5 = logits.topk(5, dim=1).indices
        c1 += int((top5[:, 0] == t).sum())
        c5 += int((top5 == t[:, None]).any(1).sum())
    for m, w in zip([m for m in model.modules() if isinstance(m, Mamba)], was):
        m.scan_impl = w
    return c1, c5


def main(args):
    t_start = time.time()
    torch.set_num_threads(1 if args.workers > 1 else args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    print('args:', vars(args), flush=True)
    print('torch', torch.__version__, 'threads', torch.get_num_threads(), flush=True)

    scan = args.scan
    if scan in ('auto', 'c'):
        try:
            load_cpu_scan(verbose=True)
            scan = 'c'
        except Exception as e:                                        # noqa: BLE001
            if args.scan == 'c':
                raise
            print('compiled scan unavailable (%s); using the pure-torch scan' % e)
            scan = 'fast'
    print('training scan kernel:', scan, flush=True)

    xtr, ytr = fd.load('train')
    xte, yte = fd.load('test')
    if args.train_subset:
        xtr, ytr = xtr[:args.train_subset], ytr[:args.train_subset]
    if args.test_subset:
        xte, yte = xte[:args.test_subset], yte[:args.test_subset]
    print('train', xtr.shape, 'test', xte.shape, flush=True)

    model = vim_fmnist(img_size=args.input_size, patch_size=args.patch_size, stride=args.stride,
                       embed_dim=args.embed_dim, depth=args.depth, d_state=args.d_state,
                       num_classes=args.nb_classes, drop_path_rate=args.drop_path,
                       scan_impl=scan)
    n_params = sum(p.numel() for p in model.parameters())
    print('params:', n_params, flush=True)
    ema = ModelEma(model, args.model_ema_decay)

    decay, no_decay = [], []
    skip = model.no_weight_decay()
    for n, p in model.named_parameters():
        if p.ndim <= 1 or n.endswith('.bias') or n in skip or n.endswith('A_log') \
                or n.endswith('A_b_log'):
            no_decay.append(p)
        else:
            decay.append(p)
    optimizer = torch.optim.AdamW([{'params': no_decay, 'weight_decay': 0.0},
                                   {'params': decay, 'weight_decay': args.weight_decay}],
                                  lr=args.lr, betas=tuple(args.opt_betas))
    start_epoch, prev = 0, None
    if args.resume:
        ck = torch.load(args.resume, map_location='cpu', weights_only=False)
        prev = ck['args']
        assert getattr(prev, 'shipped_weights', 'model') == 'model', \
            "resume needs ck['model'] to be the online weights"
        model.load_state_dict(ck['model'])
        ema.ema.load_state_dict(ck['model_ema'])
        optimizer.load_state_dict(ck['optimizer'])
        for g in optimizer.param_groups:                   # new schedule for this stage
            g['lr'] = g['initial_lr'] = args.lr
        start_epoch = ck['epoch'] + 1
        args.previous_stages = list(getattr(prev, 'previous_stages', [])) + [dict(
            checkpoint=os.path.basename(args.resume), epochs=ck['epoch'] + 1,
            iterations=getattr(prev, 'total_iters_run', None),
            train_loop_minutes=getattr(prev, 'train_loop_minutes', None), lr=prev.lr,
            warmup_iters=prev.warmup_iters, time_budget=prev.time_budget, seed=prev.seed)]
        print('resumed from %s (epoch %d); previous stages: %s' % (
            args.resume, ck['epoch'], args.previous_stages), flush=True)
    ipe = len(ytr) // args.batch_size                                 # drop_last
    total = args.total_iters or ipe * args.epochs        # upper bound in time-budget mode
    sched_fn = WarmupCosine(args.warmup_iters, args.min_lr / args.lr)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, sched_fn)
    gen = torch.Generator().manual_seed(args.seed)
    params = [p for p in model.parameters()]
    pool = None
    if args.workers > 1:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(args.workers)

    def slice_grad(x, y, n_total):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=args.smoothing, reduction='sum') / n_total
        return loss.detach(), logits.detach(), torch.autograd.grad(loss, params)

    epochs = math.ceil(total / ipe)
    it = 0
    t_warm = 0.0
    t_train = time.time()
    log = []
    epoch = 0
    while epoch < epochs and it < total:
        if epoch == 0 and start_epoch:
            print('epoch numbering continues at %d' % start_epoch, flush=True)
        model.train()
        perm = torch.randperm(len(ytr), generator=gen).numpy()
        t_ep = time.time()
        run_loss, run_n, run_c = 0.0, 0, 0
        for bi in range(ipe):
            if it >= total:
                break
            idx = perm[bi * args.batch_size:(bi + 1) * args.batch_size]
            x = augment(xtr[idx], gen, args.crop_padding, args.hflip)
            y = torch.as_tensor(ytr[idx])
            optimizer.zero_grad(set_to_none=True)
            if pool is None:
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=args.smoothing)
                loss.backward()
            else:
                bounds = np.linspace(0, len(y), args.workers + 1).astype(int)
                outs = list(pool.map(lambda ab: slice_grad(x[ab[0]:ab[1]], y[ab[0]:ab[1]], len(y)),
                                     zip(bounds[:-1], bounds[1:])))
                loss = sum(o[0] for o in outs)
                logits = torch.cat([o[1] for o in outs])
                for j, p in enumerate(params):                 # fixed summation order
                    g = outs[0][2][j]
                    for o in outs[1:]:
                        g = g + o[2][j]
                    p.grad = g
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
            ema.update(model)
            it += 1
            run_loss += loss.item() * len(y)
            run_n += len(y)
            run_c += int((logits.argmax(1) == y).sum())
            el = time.time() - t_train
            if it == args.warmup_iters:
                t_warm = el
                print('warm-up done at %.1f min' % (el / 60), flush=True)
            if it >= args.warmup_iters:
                if args.total_iters:
                    sched_fn.progress = (it - args.warmup_iters) / max(1, total - args.warmup_iters)
                else:
                    budget = 60 * args.time_budget
                    sched_fn.progress = (el - t_warm) / max(1.0, budget - t_warm)
                    if el >= budget:
                        print('time budget used: stopping at iteration %d' % it, flush=True)
                        total = it
            lr_scheduler.step()          # lr for the next iteration
            if it % 50 == 0:
                el = time.time() - t_train
                print('ep %d it %d/%d loss %.4f acc %.4f lr %.2e  %.2f s/it  elapsed %.1f min' % (
                    epoch, bi + 1, ipe, run_loss / run_n, run_c / run_n,
                    optimizer.param_groups[0]['lr'], (time.time() - t_ep) / (bi + 1), el / 60),
                    flush=True)
        # progress check: first 1000 test images, compiled path
        c1, _ = evaluate(model, xte[:1000], yte[:1000], impl=scan)
        e1, _ = evaluate(ema.ema, xte[:1000], yte[:1000], impl=scan)
        rec = dict(epoch=start_epoch + epoch, iters=it, train_loss=run_loss / max(1, run_n),
                   train_acc=run_c / max(1, run_n), test1k_model=c1 / 1000, test1k_ema=e1 / 1000,
                   epoch_min=(time.time() - t_ep) / 60, elapsed_min=(time.time() - t_train) / 60)
        log.append(rec)
        print('EPOCH', json.dumps(rec), flush=True)
        epoch += 1
    epochs = epoch                                     # epochs started (the last may be partial)
    train_min = (time.time() - t_train) / 60
    print('training loop wall time: %.1f min (%d epochs, %d iterations)' % (train_min, epochs, it),
          flush=True)

    # full test-set evaluation with the training kernel (models/tools/make_golden.py re-checks
    # the shipped weights with the pure-torch scan and asserts the same counts)
    t_ev = time.time()
    m1, m5 = evaluate(model, xte, yte, impl=scan)
    e1, e5 = evaluate(ema.ema, xte, yte, impl=scan)
    set_scan(model, 'fast')
    set_scan(ema.ema, 'fast')
    print('FULL TEST (%d images, scan=%s): model top1 %d top5 %d; EMA top1 %d top5 %d'
          ' (%.1f s)' % (len(yte), scan, m1, m5, e1, e5, time.time() - t_ev), flush=True)
    shipped = 'ema' if e1 > m1 else 'model'
    print('shipping:', shipped, flush=True)
    result = dict(model_top1_correct=m1, model_top5_correct=m5, ema_top1_correct=e1,
                  ema_top5_correct=e5, count=len(yte), shipped=shipped, epochs=epochs,
                  iterations=it, epochs_fraction=it / ipe, batch_size=args.batch_size, train_loop_minutes=train_min,
                  total_minutes=(time.time() - t_start) / 60, params=n_params,
                  train_scan_kernel=scan, torch=torch.__version__, log=log)
    args.epochs_run = epochs
    args.total_iters_run = it
    args.train_loop_minutes = train_min
    result['start_epoch'] = start_epoch
    result['previous_stages'] = getattr(args, 'previous_stages', [])
    args.shipped_weights = shipped
    if args.export:
        import export
        export.export_all(model, ema.ema, optimizer, lr_scheduler, start_epoch + epochs - 1, args,
                          result,
                          args.output_dir)
    result['total_minutes'] = (time.time() - t_start) / 60
    with open(os.path.join(args.output_dir, 'train_result.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print('done, total wall time %.1f min' % result['total_minutes'], flush=True)


if __name__ == '__main__':
    main(get_args())
