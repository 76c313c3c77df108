"""
Pure-PyTorch (CPU) port of hustvl/Vim ``VisionMamba`` (bimamba v2, middle cls token,
fused add + RMSNorm, residual in fp32, if_divide_out=True), as specified in
shared/spec/vim-architecture.md.

* Parameter names are exactly the hustvl state-dict names (``patch_embed.proj.weight``,
  ``cls_token``, ``pos_embed``, ``layers.{i}.mixer.*``, ``layers.{i}.norm.weight``,
  ``norm_f.weight``, ``head.weight``, ``head.bias``), in the same state_dict order, so
  ``model.load_state_dict(torch.load(ckpt)['model'])`` works both ways.
* The selective scan is exact (same math as ``selective_scan_ref``): ``exp(dt*A)`` and
  ``dt*B*u`` are precomputed for every step, only the recurrence ``h = a*h + b`` is a
  Python loop, and the backward pass is a hand-written reverse scan
  (:class:`SelectiveScanFn`, checked with ``torch.autograd.gradcheck`` in ``selftest``).
  ``scan_impl='ref'`` switches to a literal per-step transcription of
  ``selective_scan_ref`` (slow, autograd through the loop) for cross-checks.
* Works in float32 and float64 (``model.double()``).

Run ``python vim_torch.py`` for the self-test (gradcheck + parity with the numpy reference).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- scan
class SelectiveScanFn(torch.autograd.Function):
    """y[b,t,e] = sum_n h[b,t,e,n] * C[b,t,n] with
    h[b,t,e,n] = exp(delta[b,t,e]*A[e,n]) * h[b,t-1,e,n] + delta[b,t,e]*u[b,t,e]*B[b,t,n], h[-1]=0.

    u, delta: (B, L, E)  (delta already softplus'ed, dt bias included)
    A: (E, N) (already -exp(A_log));  Bm, Cm: (B, L, N).  Returns (B, L, E).
    The D skip and the z gate are applied outside (plain autograd)."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm):
        ut = u.transpose(0, 1).contiguous()        # (L, B, E)   time-major
        dt = delta.transpose(0, 1).contiguous()
        Bt = Bm.transpose(0, 1).contiguous()       # (L, B, N)
        Ct = Cm.transpose(0, 1).contiguous()
        L = ut.shape[0]
        dA = torch.exp(dt.unsqueeze(-1) * A)       # (L, B, E, N)  exp(delta*A)
        hs = (dt * ut).unsqueeze(-1) * Bt.unsqueeze(2)   # (L, B, E, N)  delta*B*u, becomes h
        for t in range(1, L):                      # the only sequential part
            hs[t].addcmul_(dA[t], hs[t - 1])
        y = torch.matmul(hs, Ct.unsqueeze(-1)).squeeze(-1)   # (L, B, E)
        ctx.save_for_backward(ut, dt, A, Bt, Ct, dA, hs)
        return y.transpose(0, 1)

    @staticmethod
    def backward(ctx, gy):
        ut, dt, A, Bt, Ct, dA, hs = ctx.saved_tensors
        L = ut.shape[0]
        gyt = gy.transpose(0, 1).contiguous()      # (L, B, E)
        # dC[t] = sum_e gy[t,e] h[t,e,:]
        dC = torch.matmul(hs.transpose(-1, -2), gyt.unsqueeze(-1)).squeeze(-1)
        # G[t] = dLoss/dh[t] (total) = gy[t] C[t] + a[t+1] G[t+1]   (reverse scan)
        G = gyt.unsqueeze(-1) * Ct.unsqueeze(2)
        for t in range(L - 2, -1, -1):
            G[t].addcmul_(dA[t + 1], G[t + 1])
        du_ = dt * ut                               # the "delta*u" factor of the input term
        # b[t] = du_[t] (x) B[t]:  d du_ = sum_n G B,  dB = sum_e G du_
        g_du = torch.matmul(G, Bt.unsqueeze(-1)).squeeze(-1)                  # (L, B, E)
        dB = torch.matmul(G.transpose(-1, -2), du_.unsqueeze(-1)).squeeze(-1)  # (L, B, N)
        # a[t] = exp(delta[t] A): d(delta[t] A) = G[t] * h[t-1] * a[t]  (t >= 1; h[-1] = 0)
        gx = G[1:]
        gx.mul_(hs[:-1]).mul_(dA[1:])              # in place, G is no longer needed
        dAmat = (gx * dt[1:].unsqueeze(-1)).sum(dim=(0, 1))                    # (E, N)
        g_delta = g_du * ut
        g_delta[1:] += (gx * A).sum(-1)
        g_u = g_du * dt
        return (g_u.transpose(0, 1), g_delta.transpose(0, 1), dAmat,
                dB.transpose(0, 1), dC.transpose(0, 1))


def selective_scan_fast(u, delta, A, Bm, Cm):
    return SelectiveScanFn.apply(u, delta, A, Bm, Cm)


# ---- optional compiled kernel (training speed only; same math, float32) --------------
_CSCAN = None
_POOL = None


def load_cpu_scan(verbose=False):
    """Compile scan_cpu.c with gcc (cached) and return the ctypes library, or None."""
    global _CSCAN
    if _CSCAN is not None:
        return _CSCAN
    import ctypes
    import hashlib
    import os
    import subprocess
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'scan_cpu.c')
    code = open(src, 'rb').read()
    tag = hashlib.sha256(code).hexdigest()[:16]
    cache = os.path.join(os.path.expanduser('~'), '.cache', 'vimvq')
    os.makedirs(cache, exist_ok=True)
    so = os.path.join(cache, 'scan_cpu_%s.so' % tag)
    if not os.path.exists(so):
        cmd = ['gcc', '-O3', '-march=native', '-fno-math-errno', '-shared', '-fPIC', src,
               '-o', so + '.tmp', '-lmvec', '-lm']
        if verbose:
            print(' '.join(cmd))
        subprocess.check_call(cmd)
        os.replace(so + '.tmp', so)
    lib = ctypes.CDLL(so)
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.scan_fwd.argtypes = [P] * 6 + [I] * 4
    lib.scan_fwd.restype = None
    lib.scan_bwd.argtypes = [P] * 11 + [I] * 4
    lib.scan_bwd.restype = None
    _CSCAN = lib
    return lib


def _chunks(Bsz, parts):
    parts = max(1, min(parts, Bsz))
    step = (Bsz + parts - 1) // parts
    return [(s, min(Bsz, s + step)) for s in range(0, Bsz, step)]


def _run_parallel(fn, jobs):
    global _POOL
    if len(jobs) == 1:
        return [fn(*jobs[0])]
    if torch.get_num_threads() == 1:              # e.g. data-parallel worker threads
        return [fn(*j) for j in jobs]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max(2, torch.get_num_threads()))
    return list(_POOL.map(lambda a: fn(*a), jobs))


class SelectiveScanCFn(torch.autograd.Function):
    """Same contract as SelectiveScanFn; forward/backward loops run in scan_cpu.c."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm):
        lib = load_cpu_scan()
        assert u.dtype == torch.float32
        u, delta, Bm, Cm = (t.contiguous() for t in (u, delta, Bm, Cm))
        Bsz, L, E = u.shape
        N = A.shape[1]
        At = A.detach().t().contiguous()                          # (N, E)
        y = torch.empty_like(u)
        f = 4

        def job(s, e):
            lib.scan_fwd(u.data_ptr() + s * L * E * f, delta.data_ptr() + s * L * E * f,
                         At.data_ptr(), Bm.data_ptr() + s * L * N * f,
                         Cm.data_ptr() + s * L * N * f, y.data_ptr() + s * L * E * f,
                         e - s, L, E, N)
        _run_parallel(job, _chunks(Bsz, 4 * torch.get_num_threads()))
        ctx.save_for_backward(u, delta, Bm, Cm, At)
        return y

    @staticmethod
    def backward(ctx, gy):
        lib = load_cpu_scan()
        u, delta, Bm, Cm, At = ctx.saved_tensors
        gy = gy.contiguous()
        Bsz, L, E = u.shape
        N = At.shape[0]
        gu, gdelta = torch.empty_like(u), torch.empty_like(u)
        gB, gC = torch.empty_like(Bm), torch.empty_like(Cm)
        chunks = _chunks(Bsz, 4 * torch.get_num_threads())
        gAt = torch.zeros(len(chunks), N, E)
        f = 4

        def job(i, s, e):
            o1, o2 = s * L * E * f, s * L * N * f
            lib.scan_bwd(u.data_ptr() + o1, delta.data_ptr() + o1, Bm.data_ptr() + o2,
                         Cm.data_ptr() + o2, At.data_ptr(), gy.data_ptr() + o1,
                         gu.data_ptr() + o1, gdelta.data_ptr() + o1, gAt[i].data_ptr(),
                         gB.data_ptr() + o2, gC.data_ptr() + o2, e - s, L, E, N)
        _run_parallel(job, [(i, s, e) for i, (s, e) in enumerate(chunks)])
        gA = gAt.sum(0).t()                                       # fixed order -> deterministic
        return gu, gdelta, gA, gB, gC


def selective_scan_loop(u, delta, A, Bm, Cm):
    """Literal transcription of mamba_ssm selective_scan_ref (token-major), autograd-able."""
    deltaA = torch.exp(torch.einsum('bld,dn->bldn', delta, A))
    deltaB_u = torch.einsum('bld,bln,bld->bldn', delta, Bm, u)
    x = A.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for i in range(u.shape[1]):
        x = deltaA[:, i] * x + deltaB_u[:, i]
        ys.append(torch.einsum('bdn,bn->bd', x, Cm[:, i]))
    return torch.stack(ys, dim=1)


# --------------------------------------------------------------------------- modules
def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class DropPath(nn.Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mamba(nn.Module):
    """mamba_ssm 1.1.1 ``Mamba`` with bimamba_type='v2', if_divide_out=True (fast-path math)."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank='auto',
                 dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, dt_scale=1.0,
                 conv_bias=True, bias=False, scan_impl='fast'):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else dt_rank
        self.scan_impl = scan_impl
        E, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1))
        self.A_log = nn.Parameter(A_log.clone())
        self.D = nn.Parameter(torch.ones(E))
        self.A_b_log = nn.Parameter(A_log.clone())
        self.conv1d_b = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias)
        self.x_proj_b = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj_b = nn.Linear(R, E, bias=True)
        self.D_b = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=bias)

        for p in (self.A_log, self.A_b_log, self.D, self.D_b):
            p._no_weight_decay = True
        dt_init_std = R ** -0.5 * dt_scale
        for proj in (self.dt_proj, self.dt_proj_b):
            nn.init.uniform_(proj.weight, -dt_init_std, dt_init_std)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            inv_dt = dt + torch.log(-torch.expm1(-dt))      # inverse softplus
            with torch.no_grad():
                proj.bias.copy_(inv_dt)
            proj.bias._no_reinit = True

    def _inner(self, x, z, conv, x_proj, dt_proj, A_log, Dskip):
        # x, z: (B, L, E) for one direction (already flipped for the backward branch)
        L = x.shape[1]
        N, R = self.d_state, self.dt_rank
        if self.scan_impl == 'c':
            # training path: same causal depthwise conv written as K shifted multiply-adds
            # in token-major layout (avoids conv1d's transposes / slow depthwise backward)
            K = conv.weight.shape[-1]
            xp = F.pad(x, (0, 0, K - 1, 0))              # zeros for x[t<0]
            u = conv.bias.expand_as(x)
            for k in range(K):                            # tap k multiplies x[t-(K-1)+k]
                u = torch.addcmul(u, xp[:, k:k + L], conv.weight[:, 0, k])
            u = F.silu(u)
        else:
            u = conv(x.transpose(1, 2))[..., :L]          # causal depthwise conv, (B, E, L)
            u = F.silu(u).transpose(1, 2)                 # (B, L, E)
        x_dbl = F.linear(u, x_proj.weight)                # (B, L, R+2N)
        dt, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=-1)
        delta = F.softplus(F.linear(dt, dt_proj.weight, dt_proj.bias))   # softplus(W dt + b)
        A = -torch.exp(A_log)
        if self.scan_impl == 'fast':
            y = selective_scan_fast(u, delta, A, Bm, Cm)
        elif self.scan_impl == 'c':
            y = SelectiveScanCFn.apply(u, delta, A, Bm, Cm)
        else:
            y = selective_scan_loop(u, delta, A, Bm, Cm)
        y = y + u * Dskip
        return y * F.silu(z)

    def forward(self, h):
        E = self.d_inner
        xz = F.linear(h, self.in_proj.weight, self.in_proj.bias)   # (B, L, 2E)
        x, z = xz[..., :E], xz[..., E:]
        out = self._inner(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        xzf = xz.flip(1)                                            # whole xz flipped
        out_b = self._inner(xzf[..., :E], xzf[..., E:], self.conv1d_b, self.x_proj_b,
                            self.dt_proj_b, self.A_b_log, self.D_b)
        y = (out + out_b.flip(1)) / 2
        return F.linear(y, self.out_proj.weight, self.out_proj.bias)


class Block(nn.Module):
    """Add -> RMSNorm -> Mixer, returns (mixer_out, residual) like hustvl's Block."""

    def __init__(self, dim, mixer_kwargs, eps=1e-5, drop_path=0.0):
        super().__init__()
        self.mixer = Mamba(dim, **mixer_kwargs)
        self.norm = RMSNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden, residual=None):
        if residual is None:
            residual = hidden
        else:
            residual = residual + self.drop_path(hidden)
        hidden = self.mixer(self.norm(residual))
        return hidden, residual


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, stride=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = img_size
        self.grid = (img_size - patch_size) // stride + 1
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x):
        assert x.shape[-1] == self.img_size and x.shape[-2] == self.img_size
        return self.proj(x).flatten(2).transpose(1, 2)     # (B, P, D), row-major grid


class VisionMamba(nn.Module):
    def __init__(self, img_size=224, patch_size=16, stride=16, depth=24, embed_dim=192,
                 channels=3, num_classes=1000, d_state=16, drop_path_rate=0.0,
                 norm_epsilon=1e-5, scan_impl='fast', **mixer_extra):
        super().__init__()
        self.img_size, self.patch_size, self.stride = img_size, patch_size, stride
        self.depth, self.embed_dim, self.channels = depth, embed_dim, channels
        self.num_classes = num_classes
        self.eps = norm_epsilon
        # registration order == hustvl state_dict order
        self.patch_embed = PatchEmbed(img_size, patch_size, stride, channels, embed_dim)
        P = self.patch_embed.num_patches
        self.cls_pos = P // 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, P + 1, embed_dim))
        self.head = nn.Linear(embed_dim, num_classes)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        mk = dict(d_state=d_state, scan_impl=scan_impl, **mixer_extra)
        self.layers = nn.ModuleList(
            [Block(embed_dim, mk, eps=norm_epsilon, drop_path=dpr[i]) for i in range(depth)])
        self.drop_path = DropPath(drop_path_rate)
        self.norm_f = RMSNorm(embed_dim, eps=norm_epsilon)
        self._init_weights()

    def _init_weights(self):
        # hustvl: trunc_normal(0.02) on pos_embed / cls_token / head (segm_init_weights),
        # then mamba _init_weights: Linear biases zeroed (except dt_proj), out_proj rescaled
        # by 1/sqrt(n_layer) after kaiming_uniform(a=sqrt(5)).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and m.bias is not None and name != 'head' \
                    and not getattr(m.bias, '_no_reinit', False):
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith('out_proj.weight'):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(self.depth)

    def no_weight_decay(self):
        return {'pos_embed', 'cls_token'}

    def forward_features(self, x):
        return self.forward_tokens(x)[:, self.cls_pos, :]

    def forward_tokens(self, x):
        """Every token's final hidden state after norm_f, (B, L, D); the cls token at cls_pos."""
        x = self.patch_embed(x)
        B = x.shape[0]
        pos = self.cls_pos
        x = torch.cat([x[:, :pos], self.cls_token.expand(B, -1, -1), x[:, pos:]], dim=1)
        x = x + self.pos_embed
        residual, hidden = None, x
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        residual = residual + self.drop_path(hidden)
        return rms_norm(residual, self.norm_f.weight, self.eps)

    def forward(self, x):
        return self.head(self.forward_features(x))


def vim_fmnist(**kw):
    """The bundled Fashion-MNIST config (models/fashion-mnist)."""
    cfg = dict(img_size=28, patch_size=4, stride=4, depth=4, embed_dim=128, channels=1,
               num_classes=10, d_state=16)
    cfg.update(kw)
    return VisionMamba(**cfg)


def vim_tiny(**kw):
    cfg = dict(img_size=224, patch_size=16, stride=16, depth=24, embed_dim=192, channels=3,
               num_classes=1000, d_state=16)
    cfg.update(kw)
    return VisionMamba(**cfg)


# --------------------------------------------------------------------------- self-test
def selftest():
    import os
    import sys
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
    import vim_numpy_ref as ref

    torch.manual_seed(0)
    # 1. gradcheck of the hand-written reverse-scan backward (float64, tiny)
    Bsz, L, E, N = 2, 5, 3, 4
    u = torch.randn(Bsz, L, E, dtype=torch.float64, requires_grad=True)
    delta = (torch.rand(Bsz, L, E, dtype=torch.float64) * 0.5 + 0.05).requires_grad_()
    A = (-torch.rand(E, N, dtype=torch.float64) * 2 - 0.1).requires_grad_()
    Bm = torch.randn(Bsz, L, N, dtype=torch.float64, requires_grad=True)
    Cm = torch.randn(Bsz, L, N, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(SelectiveScanFn.apply, (u, delta, A, Bm, Cm))
    print('gradcheck SelectiveScanFn:', ok)
    yf = selective_scan_fast(u, delta, A, Bm, Cm)
    yl = selective_scan_loop(u, delta, A, Bm, Cm)
    print('fast vs loop scan max|d| =', (yf - yl).abs().max().item())

    # 1b. optional C kernel (float32) against the float64 torch scan, forward and gradients
    try:
        load_cpu_scan()
        ins = [torch.randn(3, 9, 37), torch.rand(3, 9, 37) * 0.5 + 0.05, -torch.rand(37, 16) * 3,
               torch.randn(3, 9, 16), torch.randn(3, 9, 16)]
        w = torch.randn(3, 9, 37, dtype=torch.float64)
        res = []
        for fn, dt in ((SelectiveScanCFn.apply, torch.float32), (SelectiveScanFn.apply, torch.float64)):
            xs = [t.to(dt).requires_grad_() for t in ins]
            y = fn(*xs)
            g = torch.autograd.grad((y.double() * w).sum(), xs)
            res.append([y.double()] + [t.double() for t in g])
        print('C scan (f32) vs torch scan (f64): max rel over y and 5 grads = %.2e' % max(
            ((a - b).abs().max() / b.abs().max()).item() for a, b in zip(*res)))
    except Exception as e:                                            # noqa: BLE001
        print('C scan not available:', e)

    # 2. model with ref scan vs fast scan, forward and gradients (float64)
    m = vim_fmnist(depth=2).double()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    out_fast = m(x)
    gfast = torch.autograd.grad(out_fast.square().sum(), list(m.parameters()))
    for mod in m.modules():
        if isinstance(mod, Mamba):
            mod.scan_impl = 'loop'
    out_loop = m(x)
    gloop = torch.autograd.grad(out_loop.square().sum(), list(m.parameters()))
    print('model fast vs loop: logits max|d| = %.3e, grads max rel = %.3e' % (
        (out_fast - out_loop).abs().max().item(),
        max(((a - b).abs().max() / (b.abs().max() + 1e-30)).item() for a, b in zip(gfast, gloop))))

    # 3. parity with the numpy float64 reference on random (perturbed) weights
    def perturbed(model, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
        return model

    torch.manual_seed(1)
    m32 = perturbed(vim_fmnist(), 2).eval()
    x32 = torch.randn(4, 1, 28, 28)
    sd64 = {k: v.double().numpy() for k, v in m32.state_dict().items()}
    ref_logits = np.stack([ref.vim_forward(img, sd64, 4, stride=4) for img in x32.double().numpy()])
    with torch.no_grad():
        l32 = m32(x32).numpy()
        l64 = m32.double()(x32.double()).numpy()
    rel = lambda a, b: np.abs(a - b).max() / np.abs(b).max()
    print('fmnist cfg: torch f32 vs numpy f64: %.3e rel;  torch f64 vs numpy f64: %.3e rel' % (
        rel(l32, ref_logits), rel(l64, ref_logits)))


if __name__ == '__main__':
    torch.set_num_threads(2)
    selftest()
