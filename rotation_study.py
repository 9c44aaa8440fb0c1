"""The rotation study: why real data learns slower through train.py than through a minimal loop.

Thesis: §4.3.1 (fixed grid of 256x256 tiles), §4.3.2 (10% of the tiles held out for validation,
rotations by any angle and flips, the DA of [34]; App. B: rotation_range=180). Those choices are
train.py's defaults. A short loop that trains the same U-Net on fresh random crops rotated by
multiples of 90 degrees learns faster on real EM; this script attributes the gap one change at a
time, through runs.py's training runs (so the settings it measures are the flags users get), beside
that loop (`minimal_loop`, the reference, kept short on purpose). Prints a markdown table of test
IoU_F (per-slice mean, Eq. 4.2) as mean ± std over seeds and writes every number to study.json.
(Not the thesis's ablation, which is Table 5.1: `python reproduce.py 5.1`.)

    python rotation_study.py --data DIR --batch-norm                 # every cell, seeds 0 and 1
    python rotation_study.py --data DIR --batch-norm --steps 864 --cells thesis,right

Defaults are sized for a 2-core CPU (U-Net F=8, 128x128 tiles, 432 steps, about 2 minutes a run);
the thesis's U-Net is F=16 on 256x256 tiles. Without --batch-norm such short runs on real EM stay in
the all-background phase (test IoU_F near 0 in every cell), so the table would compare nothing.

It also measures how much each rotation mode smooths a tile: mean |horizontal difference| of the
augmented training tiles over that of the originals (bilinear resampling at a non-right angle is a
low-pass filter: with independent pixel noise about 2/3 of its amplitude survives on average).
docs/rotation-study.md holds the table measured on a real ssTEM stack and what it shows.
"""
import math
import os
import time
from dataclasses import dataclass

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np
import torch
import torch.nn.functional as F

import data
import evaluate
import models
import presets
import runs
import schedules
import train

BN_MOMENTUM = 0.1  # torch's default: running statistics that settle within a short run


@dataclass(frozen=True)
class Study:
    """What every cell of the study shares (the command's flags): the data and the U-Net's training."""
    data: str
    filters: int
    lr: float
    batch_norm: bool
    batch_size: int
    tile: int
    steps: int

# key: (what changes, the settings of a train.py run) or (what changes, rotation of the minimal loop)
CELLS = {
    "thesis": ("train.py defaults: tiles, any-angle bilinear, 10% held out (§4.3.2)", {}),
    "loop": ("minimal loop: random crops, rot90 x k and flips", "right"),
    "loop-any": ("minimal loop, rotation by data.apply_geometry at any angle", "any"),
    "right": ("train.py --rotation right", {"rotation": "right"}),
    "nearest": ("train.py --rotation any-nearest", {"rotation": "any-nearest"}),
    "crops": ("train.py --sampling crops", {"sampling": "crops"}),
    "no-val": ("train.py --val-fraction 0", {"val_fraction": 0.0}),
    "all": ("train.py --sampling crops --rotation right --val-fraction 0",
            {"sampling": "crops", "rotation": "right", "val_fraction": 0.0}),
}


def horizontal_variation(images):
    """Mean |x[:, j+1] - x[:, j]| of float images in [0, 1]: how much fine detail (and noise) is left."""
    return float(np.mean([np.abs(np.diff(image, axis=-1)).mean() for image in images]))


def smoothing_table(train_x, test_x, tile, seed=0):
    """Horizontal variation of augmented training tiles relative to the unaugmented ones, per mode."""
    tiles = data.extract_tiles(train_x, tile).astype(np.float32) / 255.0  # (n, T, T) float32 in [0, 1]
    base = horizontal_variation(tiles)
    rows = {"test slices": horizontal_variation([s.astype(np.float32) / 255.0 for s in test_x]) / base}
    for rotation in data.ROTATIONS:
        rng = np.random.default_rng(seed)
        out = [data.apply_geometry(t, data.random_geometry(rng, rotation), data.image_order(rotation))
               for t in tiles]
        rows[f"--rotation {rotation}"] = horizontal_variation(out) / base
    for angle in (10.0, 45.0, 90.0):
        rows[f"bilinear at {angle:g} degrees"] = (horizontal_variation([data.rotate(t, angle) for t in tiles])
                                                  / base)
    return rows


def study_slices(folder):
    """((train x, y), (test x, y)) of a data-set folder, the test slices mapped as the training ones."""
    train, test = data.read_train_test(folder)
    return (train.images, train.masks), (test.images, test.masks)


def minimal_loop(study, seed, rotation, steps):
    """The reference: fresh random crops of whole slices, a rotation and flips, AdamW with cosine decay
    per step, BCE, the final weights. rotation 'right': np.rot90 by k; 'any': data.apply_geometry."""
    torch.manual_seed(seed)  # the same initial weights as train.py --seed seed
    rng = np.random.default_rng([seed, 1])
    (x, y), (test_x, test_y) = study_slices(study.data)
    model = models.build_model("unet", filters=study.filters, batch_norm=study.batch_norm or None)
    models.set_bn_momentum(model, BN_MOMENTUM)  # as train.py does with --bn-momentum
    opt = torch.optim.AdamW(model.parameters(), lr=study.lr, weight_decay=presets.THESIS["weight_decay"])
    t, start = study.tile, time.perf_counter()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = schedules.cosine_lr(step, steps, study.lr)
        xs, ys = [], []
        for _ in range(study.batch_size):
            k = rng.integers(len(x))
            r, c = rng.integers(x[k].shape[0] - t + 1), rng.integers(x[k].shape[1] - t + 1)
            image, mask = x[k][r:r + t, c:c + t] / np.float32(255), y[k][r:r + t, c:c + t]  # (T, T) each
            if rotation == "right":
                turns = rng.integers(4)
                image, mask = np.rot90(image, turns), np.rot90(mask, turns)
            else:
                geometry = (rng.uniform(-180.0, 180.0), False, False)
                image, mask = data.apply_geometry(image, geometry, 1), data.apply_geometry(mask, geometry, 0)
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                image, mask = image[::-1], mask[::-1]
            xs.append(image.copy())
            ys.append(mask.astype(np.float32))
        xb, yb = (torch.from_numpy(np.stack(xs))[:, None],
                  torch.from_numpy(np.stack(ys))[:, None])  # (B, 1, T, T)
        loss = F.binary_cross_entropy_with_logits(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    metrics = evaluate.evaluate_stack(evaluate.predict_slices(model, test_x, torch.device("cpu")), test_y)
    return {**metrics, "train_seconds": seconds}


def cell_config(study, settings, seed, epochs):
    """The training run of one cell: the thesis protocol with the study's sizes and the cell's changes."""
    norm = {"batch_norm": True, "bn_momentum": BN_MOMENTUM} if study.batch_norm else {}
    return presets.make_config("unet", preset="thesis", data=study.data, filters=study.filters, lr=study.lr,
                               batch_size=study.batch_size, tile=study.tile, epochs=epochs, seed=seed, **norm,
                               **settings)


def epochs_for(study, settings):
    """Whole epochs whose step count comes nearest to the study's steps for this cell, and that count."""
    run, slices, _ = train.load_slices(cell_config(study, settings, 0, 1))
    per_epoch = math.ceil(len(train.training_sets(run, *slices["train"], 0)[0]) / study.batch_size)
    epochs = max(1, round(study.steps / per_epoch))
    return epochs, epochs * per_epoch


def summarise(runs):
    """Markdown table: one row per cell, mean ± std (over seeds, ddof 0) of per-slice and pooled IoU_F."""
    lines = ["| cell | what changes | steps | seeds | test IoU_F | pooled IoU_F | vs thesis cell |",
             "|---|---|---|---|---|---|---|"]
    base = [r["test_iou_f"] for r in runs if r["cell"] == "thesis"]
    for key, (what, _) in CELLS.items():
        mine = [r for r in runs if r["cell"] == key]
        if not mine:
            continue
        iou, pooled = (np.array([r["test_iou_f"] for r in mine]),
                       np.array([r["test_iou_f_global"] for r in mine]))
        delta = f"{iou.mean() - np.mean(base):+.3f}" if base else ""
        lines.append(f"| {key} | {what} | {mine[0]['steps']} | {len(mine)} | "
                     f"{iou.mean():.3f} ± {iou.std():.3f} | {pooled.mean():.3f} ± {pooled.std():.3f} | "
                     f"{delta} |")
    return "\n".join(lines)


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a data-set folder (python data.py DIR checks one)")
    p.add_argument("--out", help="results folder (default runs/rotation-study-<time>); must be new or empty")
    p.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated subset of {', '.join(CELLS)}")
    p.add_argument("--seeds", type=cli.at_least(int), default=2)
    p.add_argument("--first-seed", type=cli.at_least(int, 0), default=0,
                   help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--steps", type=cli.at_least(int), default=432, help="optimiser steps per run (train.py: "
                   "nearest whole epochs)")
    p.add_argument("--filters", type=cli.at_least(int), default=8,
                   help="U-Net initial filters F (the thesis: 16)")
    p.add_argument("--lr", type=cli.at_least(float, 0.0), default=1e-3)
    p.add_argument("--batch-norm", action="store_true", help=f"U-Net with BatchNorm (momentum "
                   f"{BN_MOMENTUM}); the thesis's best U-Net has none (Table 5.1)")
    p.add_argument("--batch-size", type=cli.at_least(int), default=6)
    p.add_argument("--tile", type=cli.at_least(int, 16), default=128,
                   help="training tile side (the thesis: 256)")
    p.add_argument("--threads", type=cli.at_least(int), default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    unknown = [c for c in args.cells.split(",") if c.strip() not in CELLS]
    if unknown:
        raise cli.UsageError(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    return args


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    args = parse_args(argv)
    out = args.out or os.path.join("runs", f"rotation-study-{time.strftime('%Y%m%d-%H%M%S')}")
    cli.refuse_nonempty(out, hint="choose a new folder (results are never overwritten)")
    study = Study(data=args.data, filters=args.filters, lr=args.lr, batch_norm=args.batch_norm,
                  batch_size=args.batch_size, tile=args.tile, steps=args.steps)
    with cli.torch_threads(args.threads):
        return run_study(study, [c.strip() for c in args.cells.split(",")],
                         range(args.first_seed, args.first_seed + args.seeds), out, vars(args))


def run_study(study, cells, seeds, out, settings):
    """The smoothing table, then every cell once per seed (a sweep stopped early has every cell once),
    into folder `out` (study.json, table.md) -> the record."""
    (train_x, _), (test_x, _) = study_slices(study.data)
    os.makedirs(out, exist_ok=True)
    smoothing = smoothing_table(train_x, test_x, study.tile)
    print("mean |horizontal difference| relative to the unaugmented training tiles:")
    for name, ratio in smoothing.items():
        print(f"  {name:28s} {ratio:.3f}")
    record = {"settings": settings, "torch": torch.__version__, "smoothing": smoothing, "runs": []}
    for seed in seeds:
        for key in cells:
            record["runs"].append(run_cell(study, key, seed, out))
            cli.write_json(record, os.path.join(out, "study.json"))
    table = summarise(record["runs"])
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return record


def run_cell(study, key, seed, out):
    """One cell, one seed: a train.py run (runs.train_in) or the minimal loop -> its numbers."""
    what, how = CELLS[key]
    start = time.perf_counter()
    if isinstance(how, dict):
        epochs, steps = epochs_for(study, how)
        result = runs.train_in(os.path.join(out, f"{key}-seed{seed}"), cell_config(study, how, seed, epochs),
                               torch.device("cpu"))
    else:
        steps, result = study.steps, minimal_loop(study, seed, how, study.steps)
    run = {"cell": key, "seed": seed, "steps": steps, "wall_seconds": round(time.perf_counter() - start, 1),
           **{k: result[k] for k in ("test_iou_f", "test_iou_f_global", "test_dice", "train_seconds")}}
    print(f"[study] {key} seed {seed}: test IoU_F {run['test_iou_f']:.4f} "
          f"(pooled {run['test_iou_f_global']:.4f}), {steps} steps, {run['wall_seconds']:.0f}s", flush=True)
    return run


if __name__ == "__main__":
    main()
