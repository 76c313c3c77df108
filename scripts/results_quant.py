#!/usr/bin/env python3
"""Regenerate the "Quantization" section of docs/RESULTS.md and the decision table of
docs/QUANTIZATION.md.

    bash scripts/results_quant.sh            # builds, then runs this
    python3 scripts/results_quant.py [--out DIR] [--group NAME...] [--force] [--render-only]

For the bundled Fashion-MNIST Vim (models/fashion-mnist/vim_fmnist.safetensors) and its 256
calibration PNGs (models/fashion-mnist/calib), it packs the model with every method at 3, 2 and
1 bits over three seeds (f16 codebooks, so methods compare at equal true bits), RTN at 3 and 4
bits as the scalar reference, the ablations and the runs that chose the defaults; evaluates each
on the full 10,000-image test set against the f32 model (`vimvq pack --eval`, which runs the
deployment runtime exactly as `vimvq eval --reference` does); and rewrites the text between the
`<!-- quant:begin -->` / `<!-- quant:end -->` markers of docs/RESULTS.md and between
`<!-- defaults:begin -->` / `<!-- defaults:end -->` of docs/QUANTIZATION.md. A run whose report
already exists in --out is reused unless --force. VIMVQ_BIN overrides the binary.
"""
import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VIMVQ_BIN", os.path.join(ROOT, "target", "release", "vimvq"))
MODEL = "models/fashion-mnist/vim_fmnist.safetensors"
CALIB = "models/fashion-mnist/calib"
TEST = "/tmp/fmnist-test"
THREADS = "2"
SEEDS = (0, 1, 2)
F16 = ["--codebook", "f16"]
NO_FT = ["--finetune-steps", "0"]
BITS = (3, 2, 1)
LABEL = {"vimvq": "ViM-VQ", "vq4dit": "VQ4DiT", "gptvq": "GPTVQ", "kmeans": "k-means", "rtn": "RTN"}


def bits_args(b):
    return ["--bits", str(b)]


# A run: (name, pack args, seeds). Its directories are out/NAME-sSEED.
def runs_main():
    """Every method per width: ViM-VQ with the defaults (global fine-tuning included), the VQ
    baselines as published (no fine-tuning); RTN at 3 and 4 bits (deterministic: one seed)."""
    r = []
    for b in BITS:
        r.append((f"vimvq-{b}", ["--method", "vimvq"] + bits_args(b) + F16, SEEDS))
        for m in ("vq4dit", "gptvq", "kmeans"):
            r.append((f"{m}-{b}", ["--method", m] + bits_args(b) + F16 + NO_FT, SEEDS))
    r.append(("rtn-3", ["--method", "rtn", "--bits", "3"], (0,)))
    r.append(("rtn-4", ["--method", "rtn", "--k", "16", "--d", "1"], (0,)))
    return r


def runs_ablation():
    """The fine-tuning stage taken out of ViM-VQ and added to each VQ baseline (fair comparison);
    the paper's ladder at 2 bits (k-means → FCCO → hull update → IVQ), without fine-tuning."""
    r = []
    for b in BITS:
        r.append((f"vimvq-noft-{b}", ["--method", "vimvq"] + bits_args(b) + F16 + NO_FT, SEEDS))
        for m in ("vq4dit", "gptvq", "kmeans"):
            r.append((f"{m}-ft-{b}", ["--method", m] + bits_args(b) + F16, SEEDS))
    r.append(("abl-fcco-2", ["--method", "vimvq", "--bits", "2", "--no-hull-update", "--no-ivq"] + F16 + NO_FT,
              SEEDS))
    r.append(("abl-hull-2", ["--method", "vimvq", "--bits", "2", "--no-ivq"] + F16 + NO_FT, SEEDS))
    return r


# Decision runs: the block-wise settings, then the fine-tuning stage, over three seeds.
DECIDE = [
    # (name, bits, extra args, what changes)
    ("dec-paper-2", 2, ["--lambda-r", "0.1", "--lr-codebook", "1e-3", "--hull", "4"], "paper settings: hull n 4, λ_r 0.1, codebook lr 1e-3"),
    ("dec-l01c3-2", 2, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "4"], "hull n 4, λ_r 0.01, codebook lr 3e-4"),
    ("dec-paper-1", 1, ["--lambda-r", "0.1", "--lr-codebook", "1e-3", "--hull", "4", "--hull-every", "10", "--ivq"], "paper settings: hull n 4, λ_r 0.1, codebook lr 1e-3"),
    ("dec-l01c3-1", 1, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "4", "--hull-every", "10", "--ivq"], "hull n 4, λ_r 0.01, codebook lr 3e-4"),
    ("dec-l01c3-h2-2", 2, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "2"], "hull n 2, λ_r 0.01, codebook lr 3e-4"),
    ("dec-l01c3-h2-1", 1, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "2", "--hull-every", "10", "--ivq"], "hull n 2, λ_r 0.01, codebook lr 3e-4"),
    ("dec-l01c3-3", 3, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "4"], "hull n 4, λ_r 0.01, codebook lr 3e-4"),
    ("dec-l01c3-h2-3", 3, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "2"], "hull n 2, λ_r 0.01, codebook lr 3e-4"),
    ("dec-h2-f32-2", 2, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "2", "--codebook", "f32"],
     "λ_r 0.01, codebook lr 3e-4, hull n 2, **f32** codebooks"),
    ("dec-h2-noivq-2", 2, ["--lambda-r", "0.01", "--lr-codebook", "3e-4", "--hull", "2", "--no-ivq"],
     "λ_r 0.01, codebook lr 3e-4, hull n 2, no IVQ (no confirmation, no schedule)"),
    ("dec-h2-nohu-1", 1, ["--hull", "2", "--no-hull-update", "--ivq"], "hull n 2, **no hull update**, IVQ"),
    ("dec-h4-nohu-1", 1, ["--hull", "4", "--no-hull-update", "--ivq"], "hull n 4, no hull update, IVQ"),
    ("dec-ft-1", 1, ["--hull", "2", "--no-hull-update", "--ivq", "--finetune-steps", "100"],
     "hull n 2, no hull update, IVQ + fine-tuning: 100 steps, lr 1e-4"),
    ("dec-ft-lr3-1", 1, ["--hull", "2", "--no-hull-update", "--ivq", "--finetune-steps", "100", "--finetune-lr", "3e-4"],
     "hull n 2, no hull update, IVQ + fine-tuning, lr **3e-4**"),
    ("dec-noivq-1", 1, ["--hull", "2", "--no-hull-update", "--no-ivq"],
     "hull n 2, no hull update, **no IVQ** (= VQ4DiT's block stage)"),
    ("dec-noivq-ft-1", 1, ["--hull", "2", "--no-hull-update", "--no-ivq", "--finetune-steps", "100"],
     "hull n 2, no hull update, no IVQ + fine-tuning (**the 1-bit default since session 6**)"),
]


def runs_decide():
    """Without fine-tuning unless the row sets `--finetune-steps`."""
    return [(n, ["--method", "vimvq"] + bits_args(b) + ([] if "--codebook" in a else F16) + a
             + ([] if "--finetune-steps" in a else NO_FT), SEEDS)
            for n, b, a, _ in DECIDE]


GROUPS = {"main": runs_main, "ablation": runs_ablation, "decide": runs_decide}


def sh(args):
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stderr}")
    return r.stdout


def pack_cmd(args, seed):
    return ["pack", MODEL, "--calib", CALIB, "--threads", THREADS, "--seed", str(seed)] + args


def run_one(out, name, args, seed, force):
    d = os.path.join(out, f"{name}-s{seed}")
    os.makedirs(d, exist_ok=True)
    model, rep = os.path.join(d, "model.vimvq"), os.path.join(d, "report.json")
    if force or not os.path.exists(rep):
        cmd = [BIN] + pack_cmd(args, seed) + ["-o", model, "--report", rep, "--eval", TEST,
                                              "--eval-f32-cache", os.path.join(out, "f32-logits.bin")]
        print("  $", " ".join(cmd[1:]), flush=True)
        sh(cmd)
    return json.load(open(rep))


def load(out, name, seeds):
    rs = []
    for s in seeds:
        p = os.path.join(out, f"{name}-s{s}", "report.json")
        if os.path.exists(p):
            rs.append(json.load(open(p)))
    return rs


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}; {rustc}"


def kl_cell(rs):
    """Mean KL over the seeds, with the seeds' range."""
    v = [r["eval"]["mean_kl"] for r in rs]
    if len(v) == 1:
        return f"{v[0]:.5f}"
    return f"**{statistics.mean(v):.5f}** ({min(v):.5f}–{max(v):.5f})"


def mean(rs, f):
    return statistics.mean(f(r) for r in rs)


def method_label(r):
    return LABEL.get(r["method"], r["method"])


def stat_row(label, rs, f32_top1):
    if not rs:
        return f"| {label} | not run |"
    r0 = rs[0]
    t1 = mean(rs, lambda r: r["eval"]["top1"])
    return (f"| {label} | {r0['true_bits_per_weight']:.2f} | {len(rs)} | {kl_cell(rs)} | "
            f"{100 * t1:.2f} ({100 * (t1 - f32_top1):+.2f}) | "
            f"{100 * mean(rs, lambda r: r['eval']['top1_agreement']):.2f} | "
            f"{mean(rs, lambda r: r['quantize_seconds']):.1f} | "
            f"{max(r['peak_rss_bytes'] for r in rs) / 2**20:.0f} | {r0['file_bytes']:,} |")


HEAD = ("| method | true bits/w | seeds | mean KL(f32‖q) (range over seeds) | top-1 % (Δ vs f32) | "
        "top-1 agreement % | calib. time s | peak RSS MiB | file bytes |\n"
        "|---|---|---|---|---|---|---|---|---|")


def render_results(out):
    allr = [r for n, _, s in runs_main() for r in load(out, n, s)]
    if not allr:
        sys.exit("no runs to render")
    f32_top1 = allr[0]["eval"]["f32_top1"]
    md5 = hashlib.md5(open(os.path.join(ROOT, MODEL), "rb").read()).hexdigest()
    L = [f"Machine: {machine()}. Generated by `bash scripts/results_quant.sh` ({time.strftime('%Y-%m-%d')}).\n",
         f"Model: `{MODEL}` (md5 `{md5}`; Fashion-MNIST Vim, D=128, depth 4, 28×28 grayscale, patch 4 → "
         f"L=50; 491,520 weights in the 24 quantized layers). Calibration: the 256 PNGs of `{CALIB}` (train "
         f"split). Test: the full 10,000-image Fashion-MNIST test set (`python3 scripts/fmnist_test_png.py "
         f"{TEST}`), evaluated by `vimvq pack ... --eval {TEST}`, which runs the deployment runtime on the "
         f"written file and on the f32 model exactly as `vimvq eval --reference` does. Every VQ run stores "
         f"f16 codebooks, so all VQ methods of one width have the same true bits per weight; RTN at 3 and 4 "
         f"bits is the scalar reference. Each VQ row is the mean over seeds {', '.join(map(str, SEEDS))} "
         f"(`--seed`: k-means++, the calibration order, the minibatches), with the seeds' KL range; RTN "
         f"has no randomness. `--threads 2`; *calib. time* is the quantization's wall time (`quantize_seconds`: blocks and "
         f"fine-tuning, not the evaluation), taken while other jobs shared the 2 cores (up to 4× "
         f"inflated); the fidelity figures do not depend on load. The *ablation* rows take the "
         f"fine-tuning stage out of ViM-VQ and add it to each baseline. The ViM-VQ-without-fine-tuning rows are the decision runs of "
         f"docs/QUANTIZATION.md at the default settings (same command).\n",
         f"**f32 reference**: top-1 {100 * f32_top1:.2f} %.\n"]
    for b in BITS:
        L.append(f"### {b} bit{'s' if b > 1 else ''} (nominal)\n")
        L.append(HEAD)
        L.append(stat_row("**ViM-VQ (default)**", load(out, f"vimvq-{b}", SEEDS), f32_top1))
        for m in ("vq4dit", "gptvq", "kmeans"):
            L.append(stat_row(LABEL[m], load(out, f"{m}-{b}", SEEDS), f32_top1))
        for n in ("rtn-4", "rtn-3"):
            L.append(stat_row(f"RTN {n[-1]}-bit (scalar reference)", load(out, n, (0,)), f32_top1))
        L.append(stat_row("*ablation:* ViM-VQ without fine-tuning", load(out, f"vimvq-noft-{b}", SEEDS),
                          f32_top1))
        for m in ("vq4dit", "gptvq", "kmeans"):
            L.append(stat_row(f"*ablation:* {LABEL[m]} + fine-tuning", load(out, f"{m}-ft-{b}", SEEDS),
                              f32_top1))
        L.append("")
    L.append("### The paper's ladder (2 bits, no fine-tuning)\n")
    L.append(HEAD)
    for n, label in (("kmeans-2", "k-means (basic VQ)"), ("abl-fcco-2", "+ FCCO (no hull update, no IVQ)"),
                     ("abl-hull-2", "+ hull update (no IVQ)"), ("vimvq-noft-2", "+ IVQ (= ViM-VQ block-wise)"),
                     ("vimvq-2", "+ global fine-tuning (= ViM-VQ default)")):
        L.append(stat_row(label, load(out, n, SEEDS), f32_top1))
    L.append("")
    L.append("Exact commands (`-o`, `--report`, `--eval /tmp/fmnist-test --eval-f32-cache F` added):\n")
    L.append("```")
    for n, a, s in runs_main() + runs_ablation():
        L.append("vimvq " + " ".join(pack_cmd(a, "S")) + f"   # {n}, S in {list(s)}")
    L.append("```\n")
    return "\n".join(L)


def render_decide(out):
    L = ["| bits | settings (ViM-VQ, block objective, 300 steps, f16 codebooks, no fine-tuning unless stated) | seeds | mean KL(f32‖q) (range) | "
         "top-1 % | calib. time s |", "|---|---|---|---|---|---|"]
    for n, b, _, label in DECIDE:
        rs = load(out, n, SEEDS)
        if not rs:
            L.append(f"| {b} | {label} | not run |")
            continue
        L.append(f"| {b} | {label} | {len(rs)} | {kl_cell(rs)} | "
                 f"{100 * mean(rs, lambda r: r['eval']['top1']):.2f} | "
                 f"{mean(rs, lambda r: r['quantize_seconds']):.1f} |")
    L.append("")
    L.append("Times were taken while other jobs shared the 2 cores (up to 4× inflated); the fidelity "
             "figures do not depend on load.\n")
    L.append("Command: `bash scripts/results_quant.sh --group decide` (each run: `vimvq pack MODEL --calib "
             "CALIB --method vimvq --bits B --codebook f16 --seed S --threads 2` plus the settings).")
    return "\n".join(L)


def replace_between(path, tag, body):
    text = open(path).read()
    block = f"<!-- {tag}:begin -->\n{body}\n<!-- {tag}:end -->"
    if f"<!-- {tag}:begin -->" not in text:
        sys.exit(f"{path} has no <!-- {tag}:begin --> marker")
    text = re.sub(rf"<!-- {tag}:begin -->.*?<!-- {tag}:end -->", lambda _: block, text, flags=re.S)
    open(path, "w").write(text)
    print(f"updated {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vimvq-results")
    ap.add_argument("--group", nargs="*", choices=sorted(GROUPS), default=sorted(GROUPS))
    ap.add_argument("--only", nargs="*", help="run only the runs whose names start with one of these")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="only rewrite the documents")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if not a.render_only:
        if not os.path.isdir(TEST):
            sh(["python3", "scripts/fmnist_test_png.py", TEST])
        for g in a.group:
            for name, args, seeds in GROUPS[g]():
                if a.only and not any(name.startswith(o) for o in a.only):
                    continue
                for s in seeds:
                    print(f"{name} seed {s}", flush=True)
                    r = run_one(a.out, name, args, s, a.force)
                    e = r["eval"]
                    print(f"  top-1 {100 * e['top1']:.2f}  agree {100 * e['top1_agreement']:.2f}  "
                          f"KL {e['mean_kl']:.5f}  {r['quantize_seconds']:.1f} s", flush=True)
    if a.only:
        return  # a partial run: render with --render-only once everything is there
    if "main" in a.group or "ablation" in a.group:
        replace_between(os.path.join(ROOT, "docs", "RESULTS.md"), "quant", render_results(a.out))
    if "decide" in a.group:
        replace_between(os.path.join(ROOT, "docs", "QUANTIZATION.md"), "defaults", render_decide(a.out))


if __name__ == "__main__":
    main()
