"""Benchmarks of every model: parameters, multiply-accumulates, inference latency and throughput, one
training step and its memory, per speed option, beside the thesis's numbers (Tables 5.2 and 5.4).

Thesis: §4.2 and Tables 5.2/5.4 give parameters and inference time per 256x256 patch (batch 1, an
RTX 3090, TensorFlow 2.9). This prints ours beside them as a markdown table and writes every number
to a JSON file.

    python bench.py --device cuda                    # every model, every variant
    python bench.py --device cpu --quick             # the Mini transformers and the U-Nets
    python bench.py --models unetr2d-mini,unet --variants fp32,bf16+channels_last

A variant is a "+"-joined set of options: fp32 (the educational code, eager), bf16 (autocast),
channels_last (NHWC weights), compile (torch.compile), fused (torch's fused attention kernel; the
transformers only). Per model and variant: latency at batch 1 (evaluate.time_inference, the protocol
of train.py), throughput at a large batch, one AdamW training step at batch 6 (the thesis's batch),
and peak memory of that step: measured on a GPU; on the CPU the tensors the step keeps for backward
plus weights, gradients and AdamW state, a lower bound. MACs are counted from the layers (`count_macs`).
bf16 is in the default variants only where it runs at speed (evaluate.bf16_supported).

How close a machine runs to its limit: the same run measures the float32 GEMM peak (`gemm_peak`, a
large square matrix product on the run's threads) and gives each training row its GFLOP/s and share
of that peak. A training step is counted as 3 forward passes (forward, and a backward of twice its
cost: gradients of the inputs and of the weights), 2 FLOPs per MAC, at batch 6.
"""
import math
import os
import platform
import time

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np
import torch
import torch.nn as nn

import attention
import evaluate
import models
import thesis_numbers
import train

# (name, arch, size, F): the models of Tables 5.2 and 5.4, then the Attention Y-Net of App. A.
MODELS = [("unet", "unet", None, 16), ("attention_unet", "attention_unet", None, 16),
          ("attention_ynet", "attention_ynet", None, 32)] \
    + [(f"{a}-{s}", a, s, 32) for a in ("unetr2d", "ynetr2d") for s in ("mini", "small", "base")] \
    + [(f"unetr2d-base-F{f}", "unetr2d", "base", f) for f in (8, 16, 64)]
QUICK_MODELS = ["unet", "attention_unet", "unetr2d-mini", "ynetr2d-mini"]
OPTIONS = ("bf16", "channels_last", "compile", "fused")
DEFAULT_VARIANTS = {"cuda": "fp32,bf16,channels_last,compile,fused,bf16+channels_last+compile+fused",
                    "cpu": "fp32,bf16,channels_last,fused,bf16+channels_last+fused"}


# ---------------------------------------------------------------- counting

def count_macs(model, side=256):
    """Multiply-accumulates of one forward pass on a (1, 1, side, side) patch, counted from the layers.

    Conv2d: output elements x (C_in / groups) x kernel area. ConvTranspose2d: input elements x
    (C_out / groups) x kernel area. Linear: output elements x in_features. Self-attention adds its two
    products, QK^T and AV (Eq. 2.1): 2 x B x h x N^2 x d. Normalisation, activations, pooling and the
    softmax are not multiply-accumulates and are left out.
    """
    total = [0]

    def conv(m, inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def conv_transpose(m, inputs, out):
        total[0] += inputs[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m, inputs, out):
        total[0] += out.numel() * m.in_features

    def self_attention(m, inputs, out):
        B, N, _ = inputs[0].shape
        total[0] += 2 * B * m.n_heads * N * N * m.head_dim

    counters = {nn.Conv2d: conv, nn.ConvTranspose2d: conv_transpose, nn.Linear: linear,
                attention.MultiHeadSelfAttention: self_attention}
    hooks = [m.register_forward_hook(counters[type(m)]) for m in model.modules() if type(m) in counters]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, side, side, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total[0]


def training_memory_lower_bound(model, x, step_loss):
    """Bytes a training step needs at least: the tensors autograd saves for backward (each storage once,
    weights excluded) plus weights, gradients and the two AdamW moments (4 x the weights)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t.detach()  # the tensor itself would tie an output to its own graph: a cycle that never frees

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step_loss(model, x)
    return sum(saved.values()) + 4 * sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------- timing

def gemm_peak(device, side=2048, repeats=5):
    """The float32 GEMM rate of `device` on torch's current threads, GFLOP/s: the best of `repeats`
    products of two side x side matrices (2 side^3 FLOPs each), after one warm-up product."""
    a, b = torch.rand(side, side, device=device), torch.rand(side, side, device=device)
    best = math.inf
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start) if i else best
    return 2 * side ** 3 / best / 1e9


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device, warmup, repeats):
    """Mean and std (ms) of `repeats` synchronised calls of fn after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.mean(times)), float(np.std(times))


def build(arch, size, filters, options, device):
    """The model (at the thesis's 256x256 input) with the variant's options, and what the steps call."""
    kw = {"img_size": 256} if models.ARCHS[arch]["sized"] else {}
    if "fused" in options:
        kw["fused_attention"] = True
    model = models.build_model(arch, size, filters, **kw).to(device)
    if "channels_last" in options:
        model = model.to(memory_format=torch.channels_last)
    return model, (torch.compile(model) if "compile" in options else model)


def bench_one(name, arch, size, filters, options, device, big_batch, quick):
    """One row: counts, batch-1 latency, throughput at `big_batch`, a training step at batch 6, memory."""
    cuda = device.type == "cuda"
    amp = "bf16" in options
    model, net = build(arch, size, filters, options, device)
    params = models.count_parameters(model)[0]
    macs = count_macs(model)

    def step_loss(module, x):
        with evaluate.autocast(amp, device):
            return train.compute_loss(module(x), x, (x > 0.5).float())

    warmup = 5 if cuda else (1 if quick else 2)
    ms, ms_std = evaluate.time_inference(net, device, side=256, amp=amp, warmup=warmup,
                                         repeats=100 if cuda else (5 if quick else 10))
    big = torch.rand(big_batch, 1, 256, 256, device=device)

    @torch.no_grad()
    def infer():
        with evaluate.autocast(amp, device):
            net(big)

    net.eval()
    batch_ms, _ = time_ms(infer, device, warmup, 20 if cuda else (2 if quick else 3))
    big = None  # freed: not part of the training step's memory
    x = torch.rand(6, 1, 256, 256, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        step_loss(net, x).backward()
        optimizer.step()

    net.train()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, step_std = time_ms(step, device, warmup, 20 if cuda else (2 if quick else 3))
    if cuda:
        memory, memory_kind = torch.cuda.max_memory_allocated(device), "measured peak"
    else:
        memory, memory_kind = (training_memory_lower_bound(model, x, step_loss),
                               "saved for backward + weights x4")
    thesis = thesis_numbers.inference_ms(arch, size, filters)
    thesis_mean = float(thesis.split()[0]) if thesis else None
    return {"model": name, "arch": arch, "size": size, "filters": filters,
            "variant": "+".join(options) or "fp32",
            "params": params, "thesis_params_millions": thesis_numbers.params(arch, size, filters),
            "gmacs_per_patch": macs / 1e9, "latency_ms": ms, "latency_std_ms": ms_std, "thesis_ms": thesis,
            "speedup_vs_thesis": thesis_mean / ms if thesis_mean else None,
            "throughput_patches_per_s": big_batch * 1000 / batch_ms, "throughput_batch": big_batch,
            "train_step_ms": step_ms, "train_step_std_ms": step_std, "train_batch": 6,
            "train_gflops": 3 * 2 * macs * 6 / (step_ms / 1000) / 1e9,
            "memory_mb": memory / 2**20, "memory_kind": memory_kind}


# ---------------------------------------------------------------- report

HEADER = ("| model | F | variant | params | GMACs | ms, batch 1 | thesis ms (RTX 3090) | x thesis | "
          "patches/s, batch {big} | train step ms, batch 6 | train GFLOP/s | % of GEMM peak | {memory} MB |")


def markdown_row(r):
    speedup = "-" if r["speedup_vs_thesis"] is None else f"{r['speedup_vs_thesis']:.2f}"
    return (f"| {r['model']} | {r['filters']} | {r['variant']} | {r['params'] / 1e6:.3f}M | "
            f"{r['gmacs_per_patch']:.2f} | {r['latency_ms']:.2f} ± {r['latency_std_ms']:.2f} | "
            f"{r['thesis_ms'] or '-'} | {speedup} | {r['throughput_patches_per_s']:.1f} | "
            f"{r['train_step_ms']:.0f} ± {r['train_step_std_ms']:.0f} | {r['train_gflops']:.1f} | "
            f"{100 * r['train_share_of_peak']:.0f}% | {r['memory_mb']:.0f} |")


def machine(device):
    """The GPU's name, or the CPU's (from /proc/cpuinfo where there is one), its cores and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def parse_variants(text):
    variants = []
    for spec in text.split(","):
        options = tuple(o for o in spec.split("+") if o and o != "fp32")
        unknown = [o for o in options if o not in OPTIONS]
        if unknown:
            raise cli.UsageError(f"--variants: unknown option {', '.join(unknown)}; use fp32 or '+'-joined "
                                 f"{', '.join(OPTIONS)}")
        variants.append(options)
    return variants


def default_variants(device):
    """DEFAULT_VARIANTS of the device's kind, without bf16 where it would crawl (evaluate.bf16_supported)."""
    variants = parse_variants(DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "cpu"])
    if evaluate.bf16_supported(device):
        return variants
    return list(dict.fromkeys(tuple(o for o in v if o != "bf16") for v in variants))


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_MODELS)}, fewer repeats")
    p.add_argument("--models", help=f"comma-separated, from: {', '.join(m[0] for m in MODELS)}")
    p.add_argument("--variants", help="comma-separated; default: " + "; ".join(f"{k}: {v}" for k, v in
                                                                                 DEFAULT_VARIANTS.items()))
    p.add_argument("--batch", type=cli.at_least(int), help="the large batch of the throughput column "
                   "(default 64 GPU, 8 CPU)")
    p.add_argument("--threads", type=cli.at_least(int), help="CPU threads (torch.set_num_threads)")
    p.add_argument("--json", default="bench.json", help="where to write every number (default bench.json; an "
                   "existing file is never replaced)")
    args = p.parse_args(argv)
    known = [m[0] for m in MODELS]
    unknown = [n for n in (args.models.split(",") if args.models else []) if n not in known]
    if unknown:
        raise cli.UsageError(f"--models: unknown model {', '.join(unknown)}; choose from {', '.join(known)}")
    if os.path.exists(args.json):
        raise cli.UsageError(f"--json {args.json} already exists; name a new file (its numbers are kept)")
    return args


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    a = parse_args(argv)
    device = cli.pick_device(a.device)
    variants = parse_variants(a.variants) if a.variants else default_variants(device)
    if any("bf16" in v for v in variants):
        evaluate.check_amp(True, device, flag="--variants bf16")
    names = a.models.split(",") if a.models else (QUICK_MODELS if a.quick else [m[0] for m in MODELS])
    with cli.torch_threads(a.threads):
        return bench_all(names, variants, device, a.batch or (64 if device.type == "cuda" else 8), a.quick,
                         a.json)


def bench_all(names, variants, device, big, quick, path):
    """Every model of `names` in every variant: a markdown row each as it is measured, all of them in
    the JSON file `path` (rewritten after every row: an interrupted run keeps its rows)."""
    known = {m[0]: m for m in MODELS}
    info = {"device": str(device), "machine": machine(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "date": time.strftime("%Y-%m-%d"), "gemm_peak_gflops": gemm_peak(device)}
    print(f"on {info['machine']}, torch {info['torch']}; thesis: RTX 3090, TensorFlow 2.9 (Tables 5.2, 5.4)")
    where = "this GPU" if device.type == "cuda" else f"this machine on {info['threads']} thread(s)"
    print(f"float32 GEMM peak of {where}: {info['gemm_peak_gflops']:.0f} GFLOP/s (2048x2048 matrices, "
          "best of 5)")
    print(HEADER.format(big=big, memory="peak" if device.type == "cuda" else "train memory (lower bound)"))
    print("|" + "---|" * HEADER.count(" |"))
    rows = []
    for name in names:
        _, arch, size, filters = known[name]
        done = set()
        for options in variants:
            if not models.ARCHS[arch]["sized"]:  # no attention to fuse in the U-Net family
                options = tuple(o for o in options if o != "fused")
            if options in done:
                continue
            done.add(options)
            row = bench_one(name, arch, size, filters, options, device, big, quick)
            rows.append({**row, "train_share_of_peak": row["train_gflops"] / info["gemm_peak_gflops"]})
            print(markdown_row(rows[-1]), flush=True)
            cli.write_json({**info, "rows": rows}, path)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
