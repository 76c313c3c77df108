# Vendored verbatim from /work/shared/reference/vim_numpy_ref.py (vimvq shared spec; independent float64
# numpy reference of the hustvl/Vim forward pass). Do not edit here; update the shared copy instead.
"""
Pure-numpy reference of the Vision Mamba (hustvl/Vim) inference forward pass,
bimamba_type="v2", middle cls token, fused add+RMSNorm, if_divide_out=True.

Two independent formulations are implemented and compared on random weights:

  forward_flip   - transcribes the PyTorch code path literally (flip xz along the
                   sequence, run the *same* causal machinery with the *_b weights,
                   flip the result back), selective_scan_ref-style scan.
  forward_direct - the "Rust-style" formulation without any flips: forward branch is
                   a causal conv + left-to-right scan, backward branch is an
                   anti-causal conv + right-to-left scan, same-position z gate.

Weights are addressed by their exact PyTorch state_dict names (see vim_arch.md §4).
Written for this research note only; float64 is used so that the two formulations
agree to ~1e-12 and any disagreement is a logic bug, not rounding.
"""
import math
import numpy as np


# ----------------------------------------------------------------- helpers
def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    # torch.nn.functional.softplus(beta=1, threshold=20) == CUDA kernel rule
    return np.where(x <= 20.0, np.log1p(np.exp(np.minimum(x, 20.0))), x)


def rmsnorm(x, w, eps=1e-5):
    # x: (L, D); mean over last dim, no mean subtraction, no bias
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * rstd * w


def patch_embed(img, W, b, stride):
    # img: (3, H, W); W: (Dm, 3, p, p); returns (P, Dm) tokens in row-major grid order
    Dm, C, p, _ = W.shape
    H = img.shape[1]
    g = (H - p) // stride + 1
    out = np.empty((g * g, Dm))
    Wf = W.reshape(Dm, -1)
    for i in range(g):
        for j in range(g):
            patch = img[:, i * stride:i * stride + p, j * stride:j * stride + p].reshape(-1)
            out[i * g + j] = Wf @ patch + b
    return out


# ------------------------------------------- formulation 1: literal / flip based
def causal_conv_torch(x, w, b):
    # x: (E, L), w: (E, 1, K) -> F.conv1d(x, w, b, padding=K-1, groups=E)[..., :L]
    E, L = x.shape
    K = w.shape[-1]
    xp = np.concatenate([np.zeros((E, K - 1)), x, np.zeros((E, K - 1))], axis=1)
    out = np.empty((E, L))
    for t in range(L):  # only the first L outputs are kept
        out[:, t] = np.sum(w[:, 0, :] * xp[:, t:t + K], axis=1) + b
    return out


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    # u, delta, z: (E, L); A: (E, N); B, C: (N, L); D, delta_bias: (E,)
    delta = softplus(delta + delta_bias[:, None])
    deltaA = np.exp(np.einsum('dl,dn->dln', delta, A))
    deltaB_u = np.einsum('dl,nl,dl->dln', delta, B, u)
    x = np.zeros(A.shape)
    ys = []
    for i in range(u.shape[1]):
        x = deltaA[:, i] * x + deltaB_u[:, i]
        ys.append(np.einsum('dn,n->d', x, C[:, i]))
    y = np.stack(ys, axis=1)
    out = y + u * D[:, None]
    return out * silu(z)


def mamba_inner_no_out_proj(xz, conv_w, conv_b, xproj_w, dtproj_w, A, D, dt_bias):
    E = xz.shape[0] // 2
    R = dtproj_w.shape[1]
    N = A.shape[1]
    x, z = xz[:E], xz[E:]
    u = silu(causal_conv_torch(x, conv_w, conv_b))          # (E, L)
    x_dbl = u.T @ xproj_w.T                                  # (L, R+2N)
    delta = dtproj_w @ x_dbl[:, :R].T                        # (E, L), bias NOT added here
    Bm = x_dbl[:, R:R + N].T                                 # (N, L)
    Cm = x_dbl[:, -N:].T                                     # (N, L)
    return selective_scan_ref(u, delta, A, Bm, Cm, D, z, dt_bias)


def mixer_flip(h, sd, p, divide_out=True):
    # h: (L, Dm) normalized hidden states -> (L, Dm)
    xz = sd[p + 'in_proj.weight'] @ h.T                      # (2E, L); in_proj has no bias
    A = -np.exp(sd[p + 'A_log'])
    A_b = -np.exp(sd[p + 'A_b_log'])
    out = mamba_inner_no_out_proj(xz, sd[p + 'conv1d.weight'], sd[p + 'conv1d.bias'],
                                  sd[p + 'x_proj.weight'], sd[p + 'dt_proj.weight'],
                                  A, sd[p + 'D'], sd[p + 'dt_proj.bias'])
    out_b = mamba_inner_no_out_proj(xz[:, ::-1], sd[p + 'conv1d_b.weight'], sd[p + 'conv1d_b.bias'],
                                    sd[p + 'x_proj_b.weight'], sd[p + 'dt_proj_b.weight'],
                                    A_b, sd[p + 'D_b'], sd[p + 'dt_proj_b.bias'])
    y = (out + out_b[:, ::-1]).T                             # (L, E)
    if divide_out:
        y = y / 2
    return y @ sd[p + 'out_proj.weight'].T                   # out_proj has no bias


# ----------------------------------------- formulation 2: direct, no flips
def mixer_direct(h, sd, p, divide_out=True):
    L, Dm = h.shape
    W_in = sd[p + 'in_proj.weight']
    E = W_in.shape[0] // 2
    xz = h @ W_in.T                                          # (L, 2E)
    x, z = xz[:, :E], xz[:, E:]
    gate = silu(z)
    acc = np.zeros((L, E))
    for direction, sfx in ((+1, ''), (-1, '_b')):
        w = sd[p + 'conv1d' + sfx + '.weight'][:, 0, :]      # (E, K)
        cb = sd[p + 'conv1d' + sfx + '.bias']
        K = w.shape[1]
        Wx = sd[p + 'x_proj' + sfx + '.weight']              # (R+2N, E)
        Wdt = sd[p + 'dt_proj' + sfx + '.weight']            # (E, R)
        bdt = sd[p + 'dt_proj' + sfx + '.bias']
        A = -np.exp(sd[p + ('A_log' if sfx == '' else 'A_b_log')])
        Dskip = sd[p + 'D' + sfx]
        R = Wdt.shape[1]
        N = A.shape[1]
        # conv: forward is causal (looks at t-3..t), backward is anti-causal (t..t+3)
        u = np.empty((L, E))
        for t in range(L):
            s = cb.copy()
            for k in range(K):
                src = t - (K - 1 - k) if direction > 0 else t + (K - 1 - k)
                if 0 <= src < L:
                    s = s + w[:, k] * x[src]
            u[t] = silu(s)
        hstate = np.zeros((E, N))
        order = range(L) if direction > 0 else range(L - 1, -1, -1)
        for t in order:
            xd = Wx @ u[t]
            dt_low, Bt, Ct = xd[:R], xd[R:R + N], xd[R + N:]
            delta = softplus(Wdt @ dt_low + bdt)             # (E,)
            hstate = np.exp(delta[:, None] * A) * hstate + (delta * u[t])[:, None] * Bt[None, :]
            y = hstate @ Ct + Dskip * u[t]
            acc[t] += y * gate[t]
    if divide_out:
        acc = acc / 2
    return acc @ sd[p + 'out_proj.weight'].T


# ----------------------------------------------------------------- full model
def vim_forward(img, sd, depth, stride=16, eps=1e-5, mixer=mixer_flip):
    tok = patch_embed(img, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride)
    M = tok.shape[0]
    pos = M // 2                                             # middle cls token index
    seq = np.concatenate([tok[:pos], sd['cls_token'][0], tok[pos:]], axis=0)
    seq = seq + sd['pos_embed'][0]
    residual = None
    hidden = seq
    for i in range(depth):
        p = f'layers.{i}.'
        residual = hidden if residual is None else residual + hidden   # fused add (drop_path = id)
        normed = rmsnorm(residual, sd[p + 'norm.weight'], eps)
        hidden = mixer(normed, sd, p + 'mixer.')
    residual = residual + hidden
    feats = rmsnorm(residual, sd['norm_f.weight'], eps)
    cls = feats[pos]
    return cls @ sd['head.weight'].T + sd['head.bias']


def random_state_dict(Dm=192, depth=2, N=16, K=4, L=197, ncls=1000, patch=16, seed=0):
    rng = np.random.default_rng(seed)
    E = 2 * Dm
    R = math.ceil(Dm / 16)
    sd = {
        'cls_token': rng.normal(0, 0.02, (1, 1, Dm)),
        'pos_embed': rng.normal(0, 0.02, (1, L, Dm)),
        'patch_embed.proj.weight': rng.normal(0, 0.02, (Dm, 3, patch, patch)),
        'patch_embed.proj.bias': rng.normal(0, 0.02, (Dm,)),
        'head.weight': rng.normal(0, 0.02, (ncls, Dm)),
        'head.bias': rng.normal(0, 0.02, (ncls,)),
        'norm_f.weight': 1 + rng.normal(0, 0.1, (Dm,)),
    }
    for i in range(depth):
        p = f'layers.{i}.mixer.'
        for sfx in ('', '_b'):
            sd[p + 'conv1d' + sfx + '.weight'] = rng.normal(0, 0.3, (E, 1, K))
            sd[p + 'conv1d' + sfx + '.bias'] = rng.normal(0, 0.1, (E,))
            sd[p + 'x_proj' + sfx + '.weight'] = rng.normal(0, 0.05, (R + 2 * N, E))
            sd[p + 'dt_proj' + sfx + '.weight'] = rng.uniform(-R ** -0.5, R ** -0.5, (E, R))
            dt = np.exp(rng.uniform(math.log(1e-3), math.log(0.1), (E,)))
            sd[p + 'dt_proj' + sfx + '.bias'] = dt + np.log(-np.expm1(-dt))  # inverse softplus
            sd[p + 'D' + sfx] = 1 + rng.normal(0, 0.1, (E,))
        sd[p + 'A_log'] = np.log(np.tile(np.arange(1, N + 1), (E, 1))) + rng.normal(0, 0.1, (E, N))
        sd[p + 'A_b_log'] = np.log(np.tile(np.arange(1, N + 1), (E, 1))) + rng.normal(0, 0.1, (E, N))
        sd[p + 'in_proj.weight'] = rng.normal(0, 0.05, (2 * E, Dm))
        sd[p + 'out_proj.weight'] = rng.normal(0, 0.05, (Dm, E))
        sd[f'layers.{i}.norm.weight'] = 1 + rng.normal(0, 0.1, (Dm,))
    return sd


if __name__ == '__main__':
    depth = 2
    for stride, L in ((16, 197),):
        sd = random_state_dict(depth=depth, L=L)
        img = np.random.default_rng(1).normal(0, 1, (3, 224, 224))
        a = vim_forward(img, sd, depth, stride=stride, mixer=mixer_flip)
        b = vim_forward(img, sd, depth, stride=stride, mixer=mixer_direct)
        print('logits[:5] flip  :', a[:5])
        print('logits[:5] direct:', b[:5])
        print('max |flip - direct| =', np.max(np.abs(a - b)), ' max|logit| =', np.max(np.abs(a)))
        # per-layer check of the mixer on a random normalized input
        h = np.random.default_rng(2).normal(0, 1, (L, 192))
        m1 = mixer_flip(h, sd, 'layers.0.mixer.')
        m2 = mixer_direct(h, sd, 'layers.0.mixer.')
        print('mixer max abs diff =', np.max(np.abs(m1 - m2)), ' scale =', np.max(np.abs(m1)))
