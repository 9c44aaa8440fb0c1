"""Evaluation and prediction shared by training (`train.py`) and inference (`predict.py`).

Thesis: §4.2 (evaluation of whole test slices: the CNNs in one pass, the transformers by the
overlap-tile method of Fig. 4.2-4.3), §4.2.1 (Eq. 4.1 Dice and Eq. 4.2 IoU_F on the foreground
class, threshold 0.5), Tables 5.2 and 5.4 (parameters and inference time per 256x256 patch).

Training and prediction call the same `predict_slices`, so a mask written by `predict.py` is the
mask that the run's own evaluation scored. The IoU_F that the thesis reports is the mean over test
slices (`test_iou_f`); the pooled IoU over the whole stack (`test_iou_f_global`) and Dice both ways
are reported beside it (the protocol of 3D tools such as pytorch_connectomics). An empty prediction
of an empty mask scores 1.
Shapes: B batch, H x W a slice, n slices; NumPy comments give dtype and range.
"""
import os
import time

import numpy as np
import torch

import cli
import stitch
import thesis_numbers

# ---------------------------------------------------------------- metrics, Eq. 4.1-4.2 (§4.2.1)

def confusion(pred, mask):
    """(TP, FP, FN) of boolean arrays of one shape."""
    pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
    return int((pred & mask).sum()), int((pred & ~mask).sum()), int((~pred & mask).sum())


def iou_from_counts(tp, fp, fn):
    # Eq. 4.2: IoU_F = TP / (TP + FP + FN); an empty prediction of an empty mask scores 1
    return 1.0 if tp + fp + fn == 0 else float(tp / (tp + fp + fn))


def dice_from_counts(tp, fp, fn):
    # Eq. 4.1: Dice = 2TP / (2TP + FP + FN)
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def iou_foreground(pred, mask):
    return iou_from_counts(*confusion(pred, mask))


def dice_coefficient(pred, mask):
    return dice_from_counts(*confusion(pred, mask))


def evaluate_stack(probs, masks, threshold=0.5):
    """Per-slice mean (the thesis's number) and pooled over the stack, for IoU_F and Dice.

    Also returns the per-slice values under "per_slice" as a list of {"iou_f", "dice"}.
    """
    counts = [confusion(np.asarray(p) > threshold, m) for p, m in zip(probs, masks)]
    tp, fp, fn = np.sum(counts, axis=0)
    per_slice = [{"iou_f": iou_from_counts(*c), "dice": dice_from_counts(*c)} for c in counts]
    return {
        "test_iou_f": float(np.mean([s["iou_f"] for s in per_slice])),
        "test_iou_f_global": iou_from_counts(tp, fp, fn),
        "test_dice": float(np.mean([s["dice"] for s in per_slice])),
        "test_dice_global": dice_from_counts(tp, fp, fn),
        "per_slice": per_slice,
    }


# ---------------------------------------------------------------- prediction of whole slices (§4.2)

def autocast(amp, device):
    """bf16 autocast on CUDA or the CPU when `amp` is set; a no-op context otherwise (and on MPS)."""
    on = bool(amp) and device.type in ("cuda", "cpu")
    return torch.autocast(device_type=device.type if on else "cpu", dtype=torch.bfloat16, enabled=on)


def bf16_supported(device):
    """Whether bf16 runs at speed on `device`: a CUDA GPU with bf16, or a CPU with AVX-512 (oneDNN's bf16
    kernels). On an AVX2-only CPU, as most laptops, bf16 is emulated and a step is ~100x slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() \
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_amp(amp, device, flag="--amp"):
    """Refuse bf16 autocast where it would crawl (a UsageError naming the reason and the fix)."""
    if amp and device.type == "cpu" and not bf16_supported(device):
        raise cli.UsageError(f"{flag}: this CPU has no bf16 support (no AVX-512), where bf16 autocast runs "
                             "about 100x slower than float32; drop the flag (float32 is the default)")


def model_window(model):
    """The fixed input side of a transformer (UNETR-2D / YNETR-2D), or None for a fully convolutional net."""
    return getattr(model, "img_size", None)


@torch.no_grad()
def predict_slice(model, image, device, amp=False, batch_size=8):
    """Probability map of one (H, W) uint8 slice -> (H, W) float32 in [0, 1] (§4.2).

    CNNs predict the whole slice in one pass; transformers by overlap-tile (Fig. 4.2-4.3) with
    windows of their input side and relevant patches of half of it.
    """
    model.eval()
    x = image.astype(np.float32) / 255.0  # (H, W) float32 in [0, 1]
    window = model_window(model)
    with autocast(amp, device):
        if window:
            return stitch.predict_tiled(stitch.model_predict_fn(model, device), x, window=window,
                                        keep=window // 2, batch_size=batch_size)
        return stitch.predict_full(model, x, multiple=16, device=device)


def predict_slices(model, images, device, amp=False, progress=None):
    """Probability maps of a stack of (H, W) uint8 slices; `progress` wraps the iterable (a tqdm bar)."""
    images = images if progress is None else progress(images)
    return [predict_slice(model, image, device, amp) for image in images]


@torch.no_grad()
def time_inference(model, device, side=256, amp=False, warmup=5, repeats=None):
    """Mean and std (ms) of one forward pass on a single side x side patch (Table 5.2/5.4 protocol)."""
    model.eval()
    repeats = repeats or (100 if device.type == "cuda" else 10)
    x = torch.rand(1, 1, side, side, device=device)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(amp, device):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.mean(times)), float(np.std(times))


def inference_numbers(model, side, device, amp=False):
    """Inference time per side x side patch as results.json keeps it (Tables 5.2/5.4 use 256x256)."""
    mean, std = time_inference(model, device, side=side, amp=amp)
    return {"inference_ms_per_patch": mean, "inference_ms_std": std, "inference_patch": side}


# ---------------------------------------------------------------- a run's report (§5)

def report(results, out, *, run_settings, pretext, data_name, arch, size):
    """A run's last lines: its test numbers (the mean ± std over seeds, as §5 reports them, kept in
    out/summary.json), the thesis's beside them (Table 5.4, where `data_name` names its data set), the
    inference time and where the outputs are."""
    key = "test_mse" if pretext else "test_iou_f"
    values = [r[key] for r in results]
    line = f"test {key[5:]}: {cli.mean_std(values, 4)}" + (f" over {len(values)} runs" if len(values) > 1
                                                             else "")
    if not pretext:
        line += (f"   (pooled IoU_F {np.mean([r['test_iou_f_global'] for r in results]):.4f}, "
                 f"Dice {np.mean([r['test_dice'] for r in results]):.4f})")
    print(line)
    thesis = thesis_numbers.iou_5_4(os.path.basename(os.path.normpath(data_name or "")), arch, size)
    if thesis and not pretext:
        print(f"thesis (Table 5.4, {thesis_numbers.DATASETS_5_4[thesis[0]]}): IoU_F {thesis[1]}")
    print(f"inference {results[0]['inference_ms_per_patch']:.2f} ± {results[0]['inference_ms_std']:.2f} ms "
          f"per {results[0]['inference_patch']}x{results[0]['inference_patch']} patch on "
          f"{results[0]['device']}; outputs in {out}")
    if len(results) > 1:
        cli.write_json({key: values, "mean": float(np.mean(values)), "std": float(np.std(values)),
                        "run": run_settings}, os.path.join(out, "summary.json"))
    if not data_name:
        print("real data: python data.py DIR, then python train.py --data DIR (Lucchi++, Kasthuri++ or your "
              "own)")


# ---------------------------------------------------------------- pictures (Pillow only)

def overlay(image, prob, mask=None, threshold=0.5):
    """(H, W, 3) uint8: the slice in grey; with a mask, true positives green, false positives red and
    false negatives blue; without one, the predicted mitochondria green."""
    rgb = np.repeat(image[..., None], 3, axis=2)  # (H, W, 3) uint8: 3 bytes a pixel, a montage's too
    pred = prob > threshold
    if mask is None:
        regions = ((pred, (0, 200, 0)),)
    else:
        truth = mask > 0
        regions = ((pred & truth, (0, 200, 0)), (pred & ~truth, (230, 0, 0)), (~pred & truth, (0, 90, 255)))
    for region, colour in regions:  # half grey, half colour, rounded down
        rgb[region] = (rgb[region].astype(np.uint16) + np.array(colour, np.uint16)) // 2
    return rgb


def save_overlay(image, prob, mask, path, threshold=0.5):
    from PIL import Image

    Image.fromarray(overlay(image, prob, mask, threshold)).save(path)


def draw_curves(history, path, pretext):
    """Loss (train, val) and validation IoU_F per epoch, drawn with Pillow."""
    import math

    from PIL import Image, ImageDraw

    history = history or [{"epoch": 0, "train_loss": math.nan, "val_loss": math.nan, "val_iou_f": math.nan}]
    img = Image.new("RGB", (900, 340), "white")
    draw = ImageDraw.Draw(img)
    epochs = [h["epoch"] for h in history]
    panels = [("loss (train: blue, val: orange)",
               [("train_loss", (31, 119, 180)), ("val_loss", (255, 127, 14))])]
    if not pretext:
        panels.append(("validation IoU_F", [("val_iou_f", (44, 160, 44))]))
    width = 880 // len(panels)
    for p, (title, series) in enumerate(panels):
        x0, y0, x1, y1 = 10 + p * width + 50, 30, 10 + (p + 1) * width - 10, 300
        values = [h[key] for key, _ in series for h in history if math.isfinite(h[key])]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 10), title, fill="black")
        draw.text((x0 - 45, y0), f"{hi:.3g}", fill="black")
        draw.text((x0 - 45, y1 - 10), f"{lo:.3g}", fill="black")
        draw.text((x0, y1 + 8), f"epoch {epochs[0]}", fill="black")
        draw.text((x1 - 60, y1 + 8), f"epoch {epochs[-1]}", fill="black")
        span = max(epochs[-1] - epochs[0], 1)
        for key, colour in series:
            pts = [(x0 + (h["epoch"] - epochs[0]) / span * (x1 - x0),
                    y1 - (h[key] - lo) / (hi - lo) * (y1 - y0))
                   for h in history if math.isfinite(h[key])]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    img.save(path)
