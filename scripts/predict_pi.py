#!/usr/bin/env python3
"""Predicted per-op latency of vimvq on a CPU we do not have (Raspberry Pi 4 / 5), from llvm-mca.

Method (docs/RESULTS.md, "Predicted Raspberry Pi ... latency"):
 1. Build the release `op_markers` example for the target (aarch64, or x86-64 to validate),
    statically linked so that libc's memcpy/memset are in the same disassembly.
 2. Run one single-threaded inference under qemu user-mode with `-d in_asm,exec,nochain`: every
    executed translation block (a straight-line piece of machine code ending at a branch) is
    logged — whatever the kernels look like — and the example's marker functions split the
    trace by op. The trace is cut at backward jumps into paths (one iteration of an innermost
    loop, or a straight piece of outer code), counted per op.
 3. Each distinct path goes to llvm-mca as a steady-state loop (`-mcpu` = the modelled core):
    cycles per execution. Predicted time of an op = sum over its paths of count × cycles / f.
    Memory stalls (cache misses, bandwidth) are not modelled; branches are taken as predicted;
    calls/returns count as nops, x86 `rep` string instructions as bytes / 32 cycles.
    A FILE:DEPTH argument traces a ≥ 3-layer copy and extrapolates to DEPTH layers.
 4. Four threads: the ops split across workers (all but `head` and the final norm) are divided
    by 4 × the assumed parallel efficiency (--eff4).

Usage (commands for the published table in docs/RESULTS.md):
  python3 scripts/predict_pi.py FILE[:DEPTH] ...                # Pi 4 / Pi 5 table
  python3 scripts/predict_pi.py --validate FILE[:DEPTH:FULL] ... # x86 build, znver3, compared
      with `vimvq bench --json` per-op times measured on this machine (FULL: the file benched)
Needs: llvm-mca-19 / llvm-objdump-19 (Debian llvm-19), qemu-user-static, and for aarch64 the
cross gcc linker of .cargo/config.toml (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross).
"""
import argparse
import collections
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ["patch_embed", "norm", "in_proj", "conv1d", "x_proj", "dt_proj", "scan", "out_proj", "head"]
SERIAL_OPS = {"head"}  # run on the calling thread only (the final norm is one row: negligible)

# (name, target triple or None for the host, qemu binary, qemu -cpu, [(label, llvm-mca -mcpu, GHz)])
PI = ("aarch64", "aarch64-unknown-linux-gnu", "qemu-aarch64-static", "cortex-a72",
      [("Pi 4 (Cortex-A72 model, 1.8 GHz)", "cortex-a72", 1.8),
       ("Pi 5 (Neoverse-N1 model for the A76, 2.4 GHz)", "neoverse-n1", 2.4)])


def tool(name):
    for cand in (name + "-19", name):
        if shutil.which(cand):
            return cand
    sys.exit(f"predict_pi: {name} not found (apt-get install llvm-19)")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def build(triple):
    """The op_markers example, statically linked (libc's memcpy & co. are then in the same
    disassembly), in its own target directory (other RUSTFLAGS than the main build)."""
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                          capture_output=True).stdout)
    target_dir = os.path.join(meta["target_directory"], "predict_pi")
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    env.setdefault("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc")
    run(["cargo", "build", "--release", "-q", "-p", "vimvq-rt", "--example", "op_markers",
         "--target", triple, "--target-dir", target_dir], cwd=ROOT, env=env)
    return os.path.join(target_dir, triple, "release", "examples", "op_markers")


def disassemble(binary):
    """address → instruction text (llvm-objdump syntax, symbolic comments dropped)."""
    out = run([tool("llvm-objdump"), "-d", "--no-show-raw-insn", binary], capture_output=True).stdout
    insns = {}
    line_re = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
    for line in out.splitlines():
        m = line_re.match(line)
        if m:
            insns[int(m.group(1), 16)] = m.group(2).strip()
    return insns


def symbol_address(binary, name):
    out = run(["nm", binary], capture_output=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    sys.exit(f"predict_pi: symbol {name} not in {binary}")


def trace(binary, model, qemu, cpu, depth=None):
    """Per op: {path: executions}, where a path is the tuple of block start pcs run between two
    backward jumps (one iteration of an innermost loop, or a straight piece of outer code); and
    {block start pc: pc of its last instruction}. Runtime addresses."""
    if not shutil.which(qemu):
        sys.exit(f"predict_pi: {qemu} not found (apt-get install qemu-user-static)")
    env = dict(os.environ, QEMU_CPU=cpu)
    cmd = [qemu, "-d", "in_asm,exec,nochain"]
    if qemu.startswith("qemu-aarch64"):
        cmd += ["-L", "/usr/aarch64-linux-gnu"]
    cmd += [binary, model]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env, bufsize=1 << 20)
    # layer[i][op]: paths of layer i (-1: patch embedding, depth: final norm and head).
    layer = collections.defaultdict(lambda: {op: collections.Counter() for op in OPS})
    norms = 0
    blocks, markers = {}, {}
    cur, path, last = collections.Counter(), [], -1
    tb_start = None
    for line in p.stderr:
        if line.startswith("Trace"):
            # Trace N: HOST [CS_BASE/PC/FLAGS/CFLAGS] SYMBOL
            pc = int(line.split("/", 2)[1], 16)
            sym = line.rsplit("]", 1)[1].strip()
            if sym == "inference_start":
                # Model loading, checksums and input set-up came before: not inference.
                cur, path, last = collections.Counter(), [], -1
            elif sym.startswith("op_done_"):
                op = sym[len("op_done_"):]
                markers[op] = pc
                if path:
                    cur[tuple(path)] += 1
                norms += op == "norm"
                layer[norms - 1][op].update(cur)
                cur, path, last = collections.Counter(), [], -1
            elif pc <= last:
                cur[tuple(path)] += 1
                path, last = [pc], pc
            else:
                path.append(pc)
                last = pc
        elif line.startswith("0x"):
            a = int(line.split(":", 1)[0], 16)
            if tb_start is None:
                tb_start = a
            blocks[tb_start] = a
        elif line.startswith("IN:") or not line.strip():
            tb_start = None
    if p.wait() != 0:
        sys.exit(f"predict_pi: {' '.join(cmd)} failed")
    return extrapolate(layer, norms - 1, depth), blocks, markers


def cached_trace(binary, model, qemu, cpu):
    """[`trace`], kept next to the binary until the binary or the model file changes."""
    key = hashlib.sha256(repr((os.stat(binary).st_mtime_ns, model.traced,
                               os.stat(model.traced).st_mtime_ns, model.depth, cpu)).encode())
    path = os.path.join(os.path.dirname(binary), f"trace-{key.hexdigest()[:16]}.pickle")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    res = trace(binary, model.traced, qemu, cpu, model.depth)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(res, f)
    os.replace(path + ".tmp", path)
    return res


def extrapolate(layer, n, depth):
    """Per-op counts of a `depth`-layer model from the trace of an `n`-layer one with the same
    shapes: first and last layers as traced (the first has no residual add, the last computes
    only the cls row), the mean of the middle layers for the other depth − 2."""
    per_op = {op: collections.Counter() for op in OPS}
    if depth is None or depth == n:
        for counts in layer.values():
            for op in OPS:
                per_op[op].update(counts[op])
        return per_op
    if n < 3:
        sys.exit(f"predict_pi: extrapolating to {depth} layers needs a traced model of ≥ 3 layers")
    w = {-1: 1.0, 0: 1.0, n - 1: 1.0, n: 1.0}
    for i in range(1, n - 1):
        w[i] = (depth - 2) / (n - 2)
    for i, counts in layer.items():
        for op in OPS:
            for pc, c in counts[op].items():
                per_op[op][pc] += c * w[i]
    return per_op


BRANCH_TARGET = re.compile(r"(?:0x)?[0-9a-f]+ <[^>]*>")
# x86 string instructions: qemu runs one block per element; cost = bytes / 32 per element
# (fast-string throughput), not an llvm-mca figure.
REP = re.compile(r"^rep\w*\s+(?:movs|stos|lods|cmps|scas)([bwlq])")
REP_BYTES = {"b": 1, "w": 2, "l": 4, "q": 8}
CALL = re.compile(r"^(?:callq?|retq?|bl|blr|ret)\b")


def block_insns(insns, start, last, arm):
    out, a = [], start
    while a <= last:
        text = insns.get(a)
        if text is not None:
            out.append(text.split("//")[0].strip() if arm else text.split(" #")[0].strip())
        a += 4 if arm else 1
    return out


def mca_source(insns, paths, blocks, base, arm):
    """Assembly with one llvm-mca region per path (its blocks' instructions in execution
    order, branch targets pointing at the region's start); returns (text, {path: extra
    cycles of string instructions})."""
    lines, extra = [], {}
    for i, path in enumerate(paths):
        body, rep = [], 0.0
        for pc in path:
            for text in block_insns(insns, pc - base, blocks.get(pc, pc) - base, arm):
                m = REP.match(text)
                if m:
                    rep += REP_BYTES[m.group(1)] / 32
                elif CALL.match(text):
                    # llvm-mca gives calls and returns a 100-cycle latency; on the cores they
                    # are predicted branches.
                    body.append("nop")
                else:
                    body.append(BRANCH_TARGET.sub(f"L{i}", text))
        extra[path] = rep
        if not body:
            body = ["nop"]
        lines += [f"# LLVM-MCA-BEGIN p{i}", f"L{i}:"] + ["  " + t for t in body]
        lines.append(f"# LLVM-MCA-END p{i}")
    return "\n".join(lines) + "\n", extra


def mca_cycles(src, triple, mcpu):
    """[steady-state cycles per execution of region i]."""
    iters = 100
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        f.write(src)
        path = f.name
    try:
        out = run([tool("llvm-mca"), f"-mtriple={triple}", f"-mcpu={mcpu}", f"-iterations={iters}",
                   "-skip-unsupported-instructions=any", "-dispatch-stats=false",
                   "-timeline=false", "-resource-pressure=false", "-instruction-info=false", path],
                  capture_output=True).stdout
    finally:
        os.unlink(path)
    cyc, name = {}, None
    for line in out.splitlines():
        m = re.match(r"\[\d+\] Code Region - p(\d+)", line)
        if m:
            name = int(m.group(1))
        m = re.match(r"Total Cycles:\s+(\d+)", line)
        if m and name is not None:
            cyc[name] = int(m.group(1)) / iters
    return cyc


def predict(binary, triple, qemu, qcpu, models, cores):
    arm = triple.startswith("aarch64")
    insns = disassemble(binary)
    result = {}
    for model in models:
        per_op, blocks, markers = cached_trace(binary, model, qemu, qcpu)
        base = markers["scan"] - symbol_address(binary, "op_done_scan")
        paths = sorted({pth for c in per_op.values() for pth in c})
        src, extra = mca_source(insns, paths, blocks, base, arm)
        index = {pth: i for i, pth in enumerate(paths)}
        result[model] = {}
        for label, mcpu, ghz in cores:
            cyc = mca_cycles(src, triple, mcpu)
            if len(cyc) != len(paths):
                sys.exit(f"predict_pi: llvm-mca reported {len(cyc)} of {len(paths)} regions")
            ops = {op: sum(n * (cyc[index[pth]] + extra[pth]) for pth, n in per_op[op].items())
                   / ghz / 1e6 for op in OPS}
            result[model][label] = {"ops_ms": ops, "paths": len(paths)}
    return result


class Spec:
    """FILE[:DEPTH[:FULL]] of the command line."""

    def __init__(self, arg):
        parts = arg.split(":")
        self.traced = os.path.abspath(parts[0])
        self.depth = int(parts[1]) if len(parts) > 1 else None
        self.full = os.path.abspath(parts[2]) if len(parts) > 2 else self.traced
        self.name = os.path.basename(self.full if len(parts) > 2 else self.traced)
        if self.depth and len(parts) < 3:
            self.name += f" extrapolated to {self.depth} layers"


def four_threads(ops, eff):
    return sum(v if op in SERIAL_OPS else v / (4 * eff) for op, v in ops.items())


CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
/* 10^6 dependent 1-cycle adds per sample; the fastest of 3000 samples (~0.3 ms each) is one
 * the neighbours did not interrupt. Prints GHz. */
int main(void) {
    double best = 1e9;
    for (int r = 0; r < 3000; r++) {
        struct timespec a, b;
        long x = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < 10000; i++)
            __asm__ volatile(".rept 100\n add $1, %0\n .endr" : "+r"(x));
        clock_gettime(CLOCK_MONOTONIC, &b);
        double t = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
        if (t < best) best = t;
    }
    printf("%.3f\n", 1e6 / best / 1e9);
    return 0;
}
"""


def clock_ghz():
    """This core's clock: a chain of dependent integer adds (one per cycle on every x86-64
    core), timed in short samples so that a loaded machine still gives a clean one."""
    d = tempfile.mkdtemp()
    src, exe = os.path.join(d, "clock.c"), os.path.join(d, "clock")
    with open(src, "w") as f:
        f.write(CLOCK_C)
    run(["gcc", "-O1", src, "-o", exe])
    ghz = float(run([exe], capture_output=True).stdout)
    shutil.rmtree(d)
    return ghz


def measured_ops(models, rounds):
    """Per op, the minimum over `rounds` single timed inferences (`vimvq bench --threads 1
    --iters 1`, 2 warm-up runs each): the figure other jobs on the machine cannot inflate."""
    run(["cargo", "build", "--release", "-q", "-p", "vimvq"], cwd=ROOT)
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                          capture_output=True).stdout)
    exe = os.path.join(meta["target_directory"], "release", "vimvq")
    best = {m: {} for m in models}
    for _ in range(rounds):
        for m in models:
            rep = json.loads(run([exe, "bench", m, "--threads", "1", "--iters", "1", "--warmup", "2",
                                  "--json"], capture_output=True).stdout)
            for op, v in rep["ops_ms"].items():
                best[m][op] = min(best[m].get(op, float("inf")), v)
            best[m]["latency_min"] = min(best[m].get("latency_min", float("inf")),
                                         rep["latency_ms"]["min"])
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", metavar="FILE[:DEPTH[:FULL]]",
                    help=".vimvq file to trace; with DEPTH, a ≥ 3-layer copy of a DEPTH-layer model "
                         "(counts extrapolated); FULL: the DEPTH-layer file --validate benchmarks")
    ap.add_argument("--validate", action="store_true",
                    help="x86-64 build and -mcpu znver3 against `vimvq bench` on this machine")
    ap.add_argument("--mcpu", default="znver3", help="x86 model for --validate (default znver3)")
    ap.add_argument("--ghz", type=float, default=None,
                    help="clock of this machine for --validate (default: measured, dependent adds)")
    ap.add_argument("--eff4", type=float, default=0.9,
                    help="assumed 4-thread parallel efficiency of the split ops (default 0.9)")
    ap.add_argument("--rounds", type=int, default=30,
                    help="single-inference bench runs per file for --validate (default 30)")
    ap.add_argument("--json", action="store_true", help="print the raw predictions as JSON")
    a = ap.parse_args()
    models = [Spec(m) for m in a.models]

    if a.validate:
        binary = build("x86_64-unknown-linux-gnu")
        cores = [(f"x86 ({a.mcpu} model)", a.mcpu, 1.0)]
        pred = predict(binary, "x86_64-unknown-linux-gnu", "qemu-x86_64-static", "max", models,
                       cores)
        ghz0 = a.ghz or clock_ghz()
        meas = measured_ops([m.full for m in models], a.rounds)
        ghz = a.ghz or max(ghz0, clock_ghz())
        print(f"clock of this core (dependent-add chain, best of before/after): {ghz:.2f} GHz")
        for m in models:
            for o, v in pred[m][cores[0][0]]["ops_ms"].items():
                pred[m][cores[0][0]]["ops_ms"][o] = v * cores[0][2] / ghz
        if a.json:
            print(json.dumps({"predicted": {m.name: pred[m] for m in models}, "measured": meas},
                             indent=1))
        for m in models:
            p, mm = pred[m][cores[0][0]]["ops_ms"], meas[m.full]
            print(f"\n{m.name}: predicted ({cores[0][0]}) vs measured (per-op min of "
                  f"{a.rounds} x `vimvq bench --threads 1 --iters 1`), ms; measured min latency "
                  f"{mm['latency_min']:.3f}")
            print("| op | predicted | measured | error |\n|---|---|---|---|")
            for op in OPS + ["total"]:
                pv = sum(p.values()) if op == "total" else p[op]
                mv = sum(mm[o] for o in OPS) if op == "total" else mm[op]
                err = (pv - mv) / mv * 100 if mv > 0 else float("nan")
                print(f"| {op} | {pv:.3f} | {mv:.3f} | {err:+.0f} % |")
        return

    binary = build(PI[1])
    pred = predict(binary, PI[1], PI[2], PI[3], models, PI[4])
    if a.json:
        print(json.dumps({m.name: pred[m] for m in models}, indent=1))
    for m in models:
        print(f"\n{m.name}: predicted ms per image "
              f"(4 threads: split ops / (4 × {a.eff4}))")
        labels = [c[0] for c in PI[4]]
        print("| op | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
        for op in OPS:
            print(f"| {op} | " + " | ".join(f"{pred[m][l]['ops_ms'][op]:.2f}" for l in labels)
                  + " |")
        print("| **total, 1 thread** | " + " | ".join(
            f"**{sum(pred[m][l]['ops_ms'].values()):.1f}**" for l in labels) + " |")
        print("| **total, 4 threads** | " + " | ".join(
            f"**{four_threads(pred[m][l]['ops_ms'], a.eff4):.1f}**" for l in labels) + " |")


if __name__ == "__main__":
    main()
