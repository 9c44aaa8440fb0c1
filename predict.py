"""Segment new EM slices with a trained model, and look inside its transformer.

Thesis: §4.2 (whole-slice prediction: the CNNs in one pass, UNETR-2D / YNETR-2D by the overlap-tile
method of Fig. 4.2-4.3), §4.2.1 (threshold 0.5, Eq. 4.1-4.2), §2.2.1.1 and Fig. 2.4 (the attention
weights softmax(QK^T / sqrt(d_k)) that `--attention` draws), §2.2.5 (the ViT's 16x16 patches).

    python predict.py runs/.../best.pt slices/ --out masks/            # a folder of PNG/TIFF slices
    python predict.py best.pt stack.tif --masks truth.tif --probabilities
    python predict.py best.pt slice.png --attention --query-patch 8,8  # per-head maps and rollout

The model is rebuilt from the checkpoint alone (`models.rebuild`, loaded with weights_only=True) and
predicts through `evaluate.predict_slice`, the function the training run's own evaluation used, so
the two cannot disagree. Attention rollout is Abnar & Zuidema (2020): the product over layers of
0.5 * mean over heads of A + 0.5 * I, rows renormalised; UNETR-2D has no class token, so we show the
row of one query patch. Shapes: L layers, h heads, N = (T/P)^2 tokens, T window side, P patch side.
"""
import argparse
import math
import os
import sys

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np
import torch
from PIL import Image, ImageDraw

import data
import degrade
import evaluate
import imagefiles
import models
import presets


# ---------------------------------------------------------------- reading and writing slices

def input_paths(path, role="images"):
    """One image file, a folder of them (natural order), or a data-set folder -> list of paths.

    A data-set folder gives its test split's images (role "images") or masks (role "masks"); one without
    a test split, the files of the slices it holds out for testing (data.hold_out).
    """
    if os.path.isfile(path):
        if not path.lower().endswith(data.IMAGE_EXTENSIONS):
            raise data.DataError(f"{path}: not a .png, .tif or .tiff file; pass an image, a multi-page "
                            "TIFF stack or a folder of them")
        return [path]
    if os.path.isdir(path) and not any(n.lower().endswith(data.IMAGE_EXTENSIONS) for n in os.listdir(path)):
        try:
            _, folders = data.find_layout(path)
        except data.DataError:
            pass  # not a data set either: _image_files names the problem
        else:
            files = data.image_files(folders["test"][role == "masks"])
            if folders["test"] != folders["train"]:
                return files
            if len(files) == 1:  # a stack: its held-out slices are pages, not files
                raise data.DataError(f"{files[0]}: the slices this data set holds out for testing are pages "
                                     "of this one file; pass the file itself, or its pages as files")
            return [files[k] for k in data.hold_out(len(files), path)["test"]]
    return data.image_files(path)


def mask_paths(path, image_dir):
    """The mask files for the images of folder `image_dir`: a mask file, a folder of masks, or a
    data-set folder, from which the masks of the split whose images folder is `image_dir` are taken
    (its test masks when `image_dir` is none of its folders)."""
    if os.path.isdir(path) and image_dir:
        try:
            _, folders = data.find_layout(path)
        except data.DataError:
            folders = {}
        for x_dir, y_dir in folders.values():
            if os.path.realpath(x_dir) == os.path.realpath(image_dir):
                return data.image_files(y_dir)
    return input_paths(path, role="masks")



def output_paths(out, files, probabilities, n_overlays):
    """Every file prediction will write, keyed by input file: mask (and probability map) per input
    file, named after it; a multi-page TIFF in gives multi-page TIFFs out; overlays for the first slices."""
    plan, slice_index = [], 0
    for path, pages in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        ext = ".tif" if len(pages) > 1 else ".png"
        entry = {"input": path, "pages": len(pages), "mask": os.path.join(out, f"{stem}_mask{ext}"),
                 "prob": os.path.join(out, f"{stem}_prob{ext}") if probabilities else None, "overlays": []}
        for k in range(len(pages)):
            if slice_index + k < n_overlays:
                suffix = "" if len(pages) == 1 else f"_{k + 1:03d}"
                entry["overlays"].append(os.path.join(out, f"{stem}{suffix}_overlay.png"))
        slice_index += len(pages)
        plan.append(entry)
    return plan


def save_pages(pages, path):
    """(H, W) uint8 pages -> one PNG, or a multi-page TIFF when there are several."""
    images = [Image.fromarray(p) for p in pages]
    if len(images) == 1:
        images[0].save(path)
    else:
        images[0].save(path, save_all=True, append_images=images[1:], compression="tiff_deflate")


def read_masks(path, files, input_path):
    """Ground-truth masks for `files`, paired as in training: natural name order, slice numbers
    compared (`data.pair_files`); `path` may be a data-set folder, whose matching masks are taken."""
    if not os.path.exists(path):
        raise cli.UsageError(f"--masks {path}: no such file or folder")
    image_dir = input_path if os.path.isdir(input_path) else os.path.dirname(files[0][0])
    mask_files = imagefiles.read_files(mask_paths(path, image_dir), is_mask=True)
    masks = [m for _, pages in mask_files for m in pages]
    slices = [p for _, pages in files for p in pages]
    data.pair_files(len(slices), [f for f, _ in files], len(masks), [f for f, _ in mask_files], image_dir,
                    path)
    for k, (mask, image) in enumerate(zip(masks, slices)):
        if mask.shape != image.shape:
            raise cli.UsageError(f"--masks {path}: mask {k + 1} is {mask.shape[0]}x{mask.shape[1]} but its "
                                 f"slice is {image.shape[0]}x{image.shape[1]}; a mask must match its slice "
                                 "pixel for pixel")
    return masks


def segment(model, device, files, *, out, masks=None, threshold=0.5, probabilities=False, overlays=3,
            overwrite=False, amp=False, checkpoint=None):
    """Predict every slice of `files` ((path, pages) as imagefiles.read_files gives them), then write masks,
    probability maps, overlays and, with ground-truth `masks`, metrics.json -> the probabilities (and
    the metrics)."""
    from tqdm import tqdm

    plan = output_paths(out, files, probabilities, overlays)
    targets = [p for e in plan for p in [e["mask"], e["prob"], *e["overlays"]] if p]
    if masks is not None:
        targets.append(os.path.join(out, "metrics.json"))
    existing = [p for p in targets if os.path.exists(p)]
    if existing and not overwrite:
        raise cli.UsageError(f"{existing[0]} already exists ({len(existing)} output file(s) would be "
                             "replaced); choose another --out or add --overwrite")
    os.makedirs(out, exist_ok=True)
    slices = [(entry, page) for entry, (_, pages) in zip(plan, files) for page in pages]
    bar = tqdm(slices, desc="slices", unit="slice", file=sys.stderr)
    probs = [evaluate.predict_slice(model, page, device, amp=amp) for _, page in bar]  # (H, W) float32
    k = 0
    for entry, (_, pages) in zip(plan, files):
        mine = probs[k:k + len(pages)]
        # §4.2.1: a pixel is a mitochondrion when its probability exceeds the threshold
        save_pages([(p > threshold).astype(np.uint8) * 255 for p in mine], entry["mask"])
        if entry["prob"]:
            save_pages([np.round(p * 255).astype(np.uint8) for p in mine], entry["prob"])
        for j, path in enumerate(entry["overlays"]):
            truth = masks[k + j] if masks is not None else None
            evaluate.save_overlay(pages[j], mine[j], truth, path, threshold)
        k += len(pages)
    print(f"wrote {len(targets) - (masks is not None)} file(s) for {len(probs)} slice(s) to {out}")
    if masks is None:
        return {"probabilities": probs}
    metrics = evaluate.evaluate_stack(probs, masks, threshold)
    names = [e["input"] if e["pages"] == 1 else f"{e['input']} (page {j + 1})"
             for e in plan for j in range(e["pages"])]
    for name, s in zip(names, metrics["per_slice"]):
        s["slice"] = name
        print(f"{name}: IoU_F {s['iou_f']:.4f}  Dice {s['dice']:.4f}")
    print(f"per-slice mean IoU_F {metrics['test_iou_f']:.4f} (pooled {metrics['test_iou_f_global']:.4f}), "
          f"Dice {metrics['test_dice']:.4f} (pooled {metrics['test_dice_global']:.4f})")
    cli.write_json({**metrics, "checkpoint": checkpoint, "threshold": threshold},
                   os.path.join(out, "metrics.json"))
    return {"probabilities": probs, **metrics}


# ---------------------------------------------------------------- attention maps (§2.2.1.1, Fig. 2.4)

def attention_rollout(maps):
    """Abnar & Zuidema's rollout of L x (B, h, N, N) attention weights -> (B, N, N).

    Each layer's mean over heads is mixed half and half with the identity (the residual connection
    of Fig. 2.5), its rows renormalised, and the layers multiplied, the first layer rightmost.
    """
    rollout = None
    for weights in maps:
        B, h, N, _ = weights.shape
        mixed = 0.5 * weights.mean(dim=1) + 0.5 * torch.eye(N, dtype=weights.dtype)  # (B, N, N)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)  # (B, N, N), rows sum to 1
        rollout = mixed if rollout is None else mixed @ rollout  # (B, N, N)
    return rollout


def heat_colours(values):
    """(H, W) float in [0, 1] -> (H, W, 3) float32 RGB on a dark-blue to yellow scale."""
    stops = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]],
                     np.float32)
    position = np.clip(values, 0, 1) * (len(stops) - 1)  # (H, W) float in [0, 4]
    low = np.minimum(np.floor(position).astype(int), len(stops) - 2)
    frac = (position - low)[..., None]  # (H, W, 1)
    return stops[low] * (1 - frac) + stops[low + 1] * frac  # (H, W, 3) float32 in [0, 255]


def heat_over(window, values, query=None, patch=16):
    """A heat map upsampled by `patch` (nearest) and blended over the grey window -> (T, T, 3) uint8.

    values: (T/P, T/P) non-negative; scaled so that its maximum is yellow. query: (i, j) patch to outline.
    """
    scaled = values / values.max() if values.max() > 0 else values
    heat = heat_colours(np.kron(scaled, np.ones((patch, patch))))  # (T, T, 3) float32
    grey = np.repeat(window[..., None].astype(np.float32), 3, axis=2)  # (T, T, 3) float32 in [0, 255]
    image = Image.fromarray((0.45 * grey + 0.55 * heat).astype(np.uint8))
    if query is not None:
        i, j = query
        ImageDraw.Draw(image).rectangle([j * patch, i * patch, (j + 1) * patch - 1, (i + 1) * patch - 1],
                                        outline=(255, 255, 255), width=2)
    return image


def cut_window(image, centre, side):
    """The side x side window centred at (y, x), clamped to the image, mirror-padded when the image is
    smaller than the window (as `stitch` pads) -> ((side, side) uint8, (top, left) in image coordinates)."""
    H, W = image.shape
    padded = np.pad(image, [(max(0, side - H),) * 2, (max(0, side - W),) * 2], mode="symmetric")
    off_y, off_x = max(0, side - H), max(0, side - W)
    top = min(max(centre[0] + off_y - side // 2, 0), padded.shape[0] - side)
    left = min(max(centre[1] + off_x - side // 2, 0), padded.shape[1] - side)
    return padded[top:top + side, left:left + side], (top - off_y, left - off_x)


def attention_figures(model, device, image, name, *, out, window_at=None, query_patch=None, overwrite=False):
    """Per-layer grids of every head's attention for one query patch, and the rollout (PNG files in `out`).
    window_at: (y, x) centre of the window (default: the image centre); query_patch: (i, j) (the grid's)."""
    encoder = getattr(model, "encoder", None)
    if not hasattr(encoder, "attention_maps"):
        raise cli.UsageError("--attention: the checkpoint holds a CNN; attention maps need a UNETR-2D or "
                             "YNETR-2D checkpoint")
    side, patch = model.img_size, model.patch_size
    grid = side // patch
    centre = window_at or (image.shape[0] // 2, image.shape[1] // 2)
    query = query_patch or (grid // 2, grid // 2)
    if not all(0 <= q < grid for q in query):
        raise cli.UsageError(f"--query-patch {query[0]},{query[1]}: outside the {grid}x{grid} patch grid; "
                             f"use I,J in 0..{grid - 1}")
    window, (top, left) = cut_window(image, centre, side)  # (T, T) uint8
    stem = os.path.splitext(os.path.basename(name))[0]
    paths = [os.path.join(out, f"{stem}_attention_layer{l + 1}.png") for l in range(len(encoder.blocks))]
    paths.append(os.path.join(out, f"{stem}_attention_rollout.png"))
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise cli.UsageError(f"{existing[0]} already exists; choose another --out or add --overwrite")
    os.makedirs(out, exist_ok=True)
    model.eval()
    x = torch.from_numpy(window.astype(np.float32) / 255.0)[None, None].to(device)  # (1, 1, T, T)
    maps = [m.float().cpu() for m in encoder.attention_maps(x)]  # L x (1, h, N, N)
    q = query[0] * grid + query[1]  # row-major token index (§2.2.5)
    for layer, (weights, path) in enumerate(zip(maps, paths)):
        h = weights.shape[1]
        cols = math.ceil(math.sqrt(h))
        rows = math.ceil(h / cols)
        sheet = Image.new("RGB", (cols * (side + 4), rows * (side + 20)), "white")
        draw = ImageDraw.Draw(sheet)
        for head in range(h):
            r, c = divmod(head, cols)
            values = weights[0, head, q].reshape(grid, grid).numpy()  # (T/P, T/P), sums to 1 over the grid
            sheet.paste(heat_over(window, values, query, patch), (c * (side + 4), r * (side + 20) + 18))
            draw.text((c * (side + 4) + 2, r * (side + 20) + 3), f"layer {layer + 1}, head {head + 1}",
                      fill="black")
        sheet.save(path)
    rollout = attention_rollout(maps)  # (1, N, N)
    heat_over(window, rollout[0, q].reshape(grid, grid).numpy(), query, patch).save(paths[-1])
    print(f"attention of patch {query[0]},{query[1]} in the {side}x{side} window at rows "
          f"{top}-{top + side - 1}, columns {left}-{left + side - 1} of {name}: {len(maps)} layer grids and "
          f"the rollout in {out}")
    return {"maps": maps, "rollout": rollout, "window": window, "paths": paths}


# ---------------------------------------------------------------- command line

def pair(text):
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integers as I,J, got {text!r}") from None
    return a, b


def parse_args(argv):
    p = cli.ArgumentParser(description="Segment EM slices with a best.pt/last.pt of train.py (§4.2), or "
                                "draw a transformer's attention (--attention).")
    p.add_argument("checkpoint", help="a best.pt or last.pt written by train.py")
    p.add_argument("input", help="one PNG/TIFF slice, a multi-page TIFF stack, or a folder of them")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--threshold", type=cli.unit_interval, default=0.5,
                   help="probability above which a pixel is "
                   "foreground (§4.2.1: 0.5)")
    p.add_argument("--probabilities", action="store_true", help="also write 8-bit probability maps")
    p.add_argument("--masks", help="ground-truth masks (file or folder) to score IoU_F and Dice against")
    p.add_argument("--overlays", type=cli.at_least(int, 0), default=3,
                   help="overlay PNGs for the first N slices")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with bf16 units)")
    p.add_argument("--threads", type=cli.at_least(int), help="CPU threads for torch (default: the training "
                   "run's, whose evaluation this then reproduces bit for bit)")
    a = p.add_argument_group("attention maps (UNETR-2D / YNETR-2D)")
    a.add_argument("--attention", action="store_true", help="draw every head's attention and the rollout")
    a.add_argument("--window-at", type=pair, metavar="Y,X",
                   help="centre of the window (default: image centre)")
    a.add_argument("--query-patch", type=pair, metavar="I,J",
                   help="query patch row,column (default: grid centre)")
    return p.parse_args(argv)


def main(argv=None):
    return cli.main(run_command, argv)


def load_model(path, flag="checkpoint"):
    """(the model a best.pt/last.pt describes, with its weights, in its run's memory layout, so that its
    evaluation is reproduced exactly; the RunConfig of the run that wrote it)."""
    ckpt = models.load_checkpoint(path, flag)
    model, run = models.rebuild(ckpt, f"{flag} {path}"), presets.RunConfig.from_dict(ckpt["run"])
    return model.to(memory_format=torch.channels_last) if run.channels_last else model, run


def prepared(run, pages):
    """New slices as the run prepared its own: its App. A preprocessing (CLAHE, or histogram matching to
    its target's mean histogram) -> list of (H, W) uint8."""
    hist = np.asarray(run.target_hist) if run.preprocess == "hist_match" else None
    return list(degrade.preprocess(pages, run.preprocess, hist))


def score_checkpoint(path, data_dir, device, amp=False):
    """IoU_F and Dice of a checkpoint on the test split of `data_dir`, its slices prepared as the run
    prepared its own, on the run's thread count (Table A.1 scores a source-trained network on the
    target so; `python predict.py CHECKPOINT DIR --masks DIR` does the same and writes the masks)."""
    model, run = load_model(path)
    part = data.warn_notes(data.read_split(data_dir, "test", masks=True, intensity=run.intensity))
    with cli.torch_threads(run.threads):  # the run's threads: its evaluation's rounding, exactly
        probs = evaluate.predict_slices(model.to(device), prepared(run, part.images), device, amp=amp)
    return evaluate.evaluate_stack(probs, part.masks)


def run_command(argv):
    """Segment (or draw attention for) the input with the checkpoint's model."""
    args = parse_args(argv)
    model, run = load_model(args.checkpoint)
    if not os.path.exists(args.input):
        raise cli.UsageError(f"{args.input}: no such file or folder; pass a slice, a TIFF stack or a folder")
    files = imagefiles.read_files(input_paths(args.input), intensity=run.intensity)  # the run's 16-bit map
    masks = read_masks(args.masks, files, args.input) if args.masks else None
    files = [(path, prepared(run, pages)) for path, pages in files]  # the run's App. A preprocessing
    device = cli.pick_device(args.device)
    evaluate.check_amp(args.amp, device)
    model = model.to(device)
    with cli.torch_threads(args.threads or run.threads):  # the run's threads: its evaluation's rounding
        if args.attention:
            path, pages = files[0]
            return attention_figures(model, device, pages[0], path, out=args.out, window_at=args.window_at,
                                     query_patch=args.query_patch, overwrite=args.overwrite)
        return segment(model, device, files, out=args.out, masks=masks, threshold=args.threshold,
                       probabilities=args.probabilities, overlays=args.overlays, overwrite=args.overwrite,
                       amp=args.amp, checkpoint=args.checkpoint)


if __name__ == "__main__":
    main()
