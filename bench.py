"""Benchmarks: parameters and inference time per 256x256 patch of every model (Tables 5.2 and 5.4).

Thesis: §4.2 and Tables 5.2/5.4 report inference time per 256x256 patch on an RTX 3090; this prints
ours beside them as a markdown table.

    python bench.py --device cuda
"""
import argparse

import torch

import evaluate
import train

ROWS = [("unet", None, 16), ("attention_unet", None, 16), ("attention_ynet", None, 32)] \
    + [(a, s, 32) for a in ("unetr2d", "ynetr2d") for s in ("mini", "small", "base")] \
    + [("unetr2d", "base", f) for f in (8, 16, 64)]


def inference_table(device, amp=False):
    print(f"inference per 256x256 patch, batch 1, on {device}" + (" (bf16 autocast)" if amp else ""))
    print("| model | F | params (ours) | params (thesis) | ms (ours) | ms (thesis, RTX 3090) |")
    print("|---|---|---|---|---|---|")
    for arch, size, filters in ROWS:
        sized = train.ARCHS[arch]["sized"]
        model = train.build_model(arch, size, filters, **({"img_size": 256} if sized else {})).to(device)
        mean, std = evaluate.time_inference(model, device, side=256, amp=amp)
        thesis = evaluate.THESIS_PARAMS.get((arch, size, filters))
        print(f"| {arch}{' ' + size if size else ''} | {filters} | {evaluate.count_parameters(model)[0] / 1e6:.3f}M | "
              f"{f'{thesis}M' if thesis else '-'} | {mean:.2f} ± {std:.2f} | "
              f"{evaluate.THESIS_MS.get((arch, size, filters), '-')} |", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    a = p.parse_args()
    inference_table(train.pick_device(a.device), a.amp)
