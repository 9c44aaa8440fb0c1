"""Unsupervised domain adaptation across microscopes (thesis Appendix A, Table A.1).

Thesis: App. A "Methodology" (histogram matching to the mean target histogram with the zero-peak
fix; the Attention Y-Net of Fig. A.1 and its loss alpha * MSE + (1 - alpha) * BCE, Eq. 1, with
BCE = 0 for unlabelled images; the three training steps), App. A "Results" and Table A.1 (train on
one data set, test on the other: UNETR-2D Base and Attention U-Net with no adaptation, with CLAHE
[68], with histogram matching, and the Attention Y-Net with histogram matching). SPEC §6 fixes the
numbers the text leaves open. The reference code is danifranco/EM_domain_adaptation (ref. [26]).

    python adapt.py --source LUCCHI --target KASTHURI          # the three-stage Attention Y-Net
    python adapt.py --table                                     # Table A.1 on built-in synthetic domains
    python adapt.py --table --source LUCCHI --target KASTHURI   # Table A.1 with the thesis's settings
    python adapt.py --table --light --source S --target T       # the light preset on your own folders

Every stage runs through `train.fit`, the loop of train.py (checkpoints, early stopping on the
validation loss with the best weights restored, --resume); this file only says what each stage
trains on, with which loss, optimiser and schedule. Target masks are read for the final score only.
Shapes: n crops, T crop side, H x W a slice; NumPy comments give dtype and range.
"""
import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle CPU threads sleep, never spin
import numpy as np
import torch

import data
import degrade
import evaluate
import models
import train


@dataclass(frozen=True)
class Stage:
    name: str         # what the stage teaches
    alpha: float      # Eq. 1: weight of the reconstruction (MSE) term
    optimizer: str
    lr: float
    scheduler: str    # plateau: reduce on plateau; onecycle: [67]
    patience: int     # early stopping on the monitored validation loss
    epochs: int
    source: str       # "raw" or "matched": the source images this stage sees
    target: bool      # whether the (unlabelled) target images are trained on
    frozen: bool      # encoder frozen (every level above the bottleneck)


# App. A, "Multi-task neural networks" (SPEC §6): three steps, each with its own optimiser and schedule.
STAGES = (
    Stage("joint", 0.98, "sgd", 1e-3, "plateau", 7, 50, source="raw", target=True, frozen=False),
    Stage("reconstruction", 1.0, "adam", 2e-4, "plateau", 6, 40, source="matched", target=True, frozen=False),
    Stage("segmentation", 0.0, "adam", 2e-4, "onecycle", 15, 100, source="matched", target=False, frozen=True),
)
THESIS_CROPS, THESIS_CROP_SIDE = 1000, 256  # "1000 random cropped patches of 256x256", 10% for validation

# Table A.1 (mean IoU_F ± std on the target's test set): (Lucchi++ -> Kasthuri++, Kasthuri++ -> Lucchi++).
THESIS_TABLE = {
    "unetr2d_base": ("UNETR-2D Base", "0.023 ± 0.025", "0.060 ± 0.027"),
    "attention_unet": ("2D Attention U-Net", "0.017 ± 0.008", "0.000 ± 0.000"),
    "attention_unet_clahe": ("2D Attention U-Net + CLAHE", "0.620 ± 0.051", "0.433 ± 0.085"),
    "attention_unet_hm": ("2D Attention U-Net + HM", "0.679 ± 0.043", "0.268 ± 0.048"),
    "attention_ynet_hm": ("2D Attention Y-Net + HM", "0.668 ± 0.020", "0.704 ± 0.045"),
    "damt_net": ("DAMT-Net [65] (not reimplemented here)", "0.279 ± 0.078", "0.569 ± 0.088"),
}

# The light preset of `--table` with no folders (or with --light): small synthetic domains, 128-px
# inputs, few epochs, one CPU thread per process and the two directions side by side (--jobs 2), so
# that the whole table runs on a 2-core CPU in minutes (README "Domain adaptation across microscopes").
# UNETR-2D runs as Mini there: Base costs ~50x more per step at this size (the row is labelled so).
# Every CNN uses BatchNorm (momentum 0.1, as the demo), without which none learns in so few steps: the
# Attention Y-Net's stage 3 reached a source validation IoU_F of 0.52 in 20 epochs without it and 0.71
# to 0.78 in 15 with it. The Y-Net's stages keep their optimisers, schedules and alphas (SPEC §6) but take
# batch 4 at lr 1e-3 and fewer, shorter epochs.
LIGHT = {"train_images": 16, "test_images": 6, "side": 256, "tile": 128, "filters": 8, "epochs": 50,
         "batch_size": 4, "lr": 1e-3, "bn_momentum": 0.1, "unetr_size": "mini", "threads": 1, "jobs": 2,
         "crops": 240, "stage_epochs": (5, 3, 15), "stage_lr": (1e-3, 1e-3, 1e-3)}


# ---------------------------------------------------------------- data (App. A: random crops)

def random_crops(slices, masks, n, side, rng):
    """n random side x side crops of a stack (mirror-padded up to `side` when smaller), the same
    windows from the masks -> ((n, T, T) uint8, (n, T, T) uint8 or None)."""
    padded = data.pad_to_multiple(slices, side) if min(slices.shape[1:]) < side else slices
    mpad = None if masks is None else (data.pad_to_multiple(masks, side) if padded is not slices else masks)
    _, height, width = padded.shape
    k = rng.integers(len(padded), size=n)
    top, left = rng.integers(height - side + 1, size=n), rng.integers(width - side + 1, size=n)
    crops = np.stack([padded[i, t:t + side, l:l + side] for i, t, l in zip(k, top, left)])  # (n, T, T) uint8
    if mpad is None:
        return crops, None
    return crops, np.stack([mpad[i, t:t + side, l:l + side] for i, t, l in zip(k, top, left)])


class Unlabelled(torch.utils.data.Dataset):
    """Target tiles without masks: (image, a mask of -1). -1 means "no label": `train.compute_loss`
    gives such a sample a BCE of 0 (App. A Eq. 1), so only its reconstruction is learnt."""

    def __init__(self, tiles):
        self.tiles = tiles  # a data.TileDataset without masks: (image, image)

    def set_epoch(self, epoch):
        self.tiles.set_epoch(epoch)

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, i):
        x, _ = self.tiles[i]  # (1, T, T) float32 in [0, 1]
        return x, torch.full_like(x, -1.0)


class Mixed(torch.utils.data.ConcatDataset):
    """Source and target samples in one data set (shuffled together by the loader)."""

    def set_epoch(self, epoch):
        for part in self.datasets:
            part.set_epoch(epoch)


def load_domains(args):
    """Source crops with masks, target crops without, split 90/10 (App. A), and the target histogram."""
    rng = np.random.default_rng([args.seed, 2022])
    source_x, source_y = data.load_split(args.source, "train", masks=True)
    target_x, _ = data.load_split(args.target, "train", masks=False)  # target masks are never read here
    sx, sy = random_crops(source_x, source_y, args.crops, args.tile, rng)
    tx, _ = random_crops(target_x, None, args.crops, args.tile, rng)
    s_train, s_val = data.split_validation(args.crops, 0.1, seed=args.seed)
    t_train, t_val = data.split_validation(args.crops, 0.1, seed=args.seed + 1)
    # App. A: the mean of the target images' histograms, bin 0 corrected for zero padding
    target_hist = degrade.mean_histogram(target_x)
    return {"source": (sx[s_train], sy[s_train]), "source_val": (sx[s_val], sy[s_val]),
            "target": tx[t_train], "target_val": tx[t_val], "target_hist": target_hist}


def stage_datasets(stage, domains, seed, rotation="any"):
    """(train, validation) data sets of one stage: which images, matched or not, labelled or not."""
    def source(split):
        x, y = domains[split]
        if stage.source == "matched":  # App. A: histogram matching from the second step on
            x = degrade.preprocess(x, "hist_match", domains["target_hist"])
        return data.TileDataset(x, y, augment=split == "source", seed=seed, rotation=rotation)

    def target(split):
        tiles = data.TileDataset(domains[split], None, augment=split == "target", seed=seed + 1, rotation=rotation)
        return Unlabelled(tiles)

    if stage.target:
        return Mixed([source("source"), target("target")]), Mixed([source("source_val"), target("target_val")])
    return source("source"), source("source_val")


# ---------------------------------------------------------------- the three stages

def stage_args(args, stage, epochs, lr, target_hist):
    """train.py's arguments for one stage (its loop reads optimiser, schedule and loss from them)."""
    argv = ["--arch", "attention_ynet", "--data", args.source, "--filters", str(args.filters),
            "--tile", str(args.tile), "--batch-size", str(args.batch_size), "--epochs", str(epochs),
            "--optimizer", stage.optimizer, "--lr", str(lr), "--scheduler", stage.scheduler,
            "--patience", str(stage.patience), "--alpha", str(stage.alpha), "--seed", str(args.seed),
            "--device", args.device]
    if stage.source == "matched":  # the checkpoint then tells predict.py to match new images too
        argv += ["--preprocess", "hist_match", "--match-to", args.target]
    if args.batch_norm:
        argv += ["--batch-norm", "--bn-momentum", str(args.bn_momentum)]
    a = train.parse_args(argv)
    a.target_hist = None if stage.source == "raw" else [float(v) for v in target_hist]
    a.workers, a.resume = 0, False
    return a


def _inference_mode(module, inputs):
    module.eval()  # runs before every forward, so model.train() cannot undo it


def freeze_encoder(model, frozen):
    """App. A: freeze the encoder (every level above the bottleneck); bottleneck and decoders train.
    A frozen BatchNorm (--batch-norm) also stays in inference mode, as a frozen Keras layer does: it
    normalises with its running statistics and never updates them, so no encoder tensor changes."""
    for module in model.encoder_modules():
        for p in module.parameters():
            p.requires_grad_(not frozen)
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            for handle in getattr(bn, "_frozen_hooks", []):
                handle.remove()
            bn._frozen_hooks = [bn.register_forward_pre_hook(_inference_mode)] if frozen else []


def run_stages(args, device):
    """The three-stage Attention Y-Net procedure into args.out/stageK-NAME; returns the model."""
    domains = load_domains(args)
    torch.manual_seed(args.seed)
    model = models.build_model("attention_ynet", filters=args.filters, batch_norm=args.batch_norm).to(device)
    models.set_bn_momentum(model, args.bn_momentum)
    for k, (stage, epochs, lr) in enumerate(zip(STAGES, args.stage_epochs, args.stage_lr)):
        out = os.path.join(args.out, f"stage{k + 1}-{stage.name}")
        done = os.path.join(out, "done.json")
        sargs = stage_args(args, stage, epochs, lr, domains["target_hist"])
        freeze_encoder(model, stage.frozen)
        if os.path.isfile(done):  # finished before an interruption: take its best weights and go on
            model.load_state_dict(models.load_checkpoint(os.path.join(out, "best.pt"), "best.pt", keys=("model",))["model"])
            print(f"stage {k + 1} ({stage.name}): done earlier, reusing {out}")
            continue
        os.makedirs(out, exist_ok=True)
        sargs.resume = os.path.isfile(os.path.join(out, "last.pt"))
        sargs.out_root = args.out
        train_ds, val_ds = stage_datasets(stage, domains, args.seed, sargs.rotation)
        print(f"stage {k + 1} ({stage.name}): alpha {stage.alpha}, {stage.optimizer} lr {lr} {stage.scheduler}, "
              f"patience {stage.patience}, {epochs} epochs, encoder {'frozen' if stage.frozen else 'trained'}, "
              f"{len(train_ds)} training / {len(val_ds)} validation crops")
        state = train.fit(model, train_ds, val_ds, sargs, device, out, label=f"stage {k + 1} {stage.name}")
        models.save_atomic({"stage": stage.name, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                           "best_val_loss": train.finite_or_none(state["best_val"])}, done)
    freeze_encoder(model, False)
    return model, domains


def score_target(model, args, device, preprocess="none", target_hist=None):
    """IoU_F on the target's test set (the only place target masks are read), or None without masks."""
    if not os.path.isdir(data.find_layout(args.target)[1]["test"][1]):
        return None
    test_x, test_y = data.load_split(args.target, "test", masks=True)
    test_x = degrade.preprocess(test_x, preprocess, target_hist)
    probs = evaluate.predict_slices(model, test_x, device)
    return evaluate.evaluate_stack(probs, test_y)


# ---------------------------------------------------------------- Table A.1

def light_data(root):
    """The built-in synthetic domains "a" and "b" as data-set folders under root (written once)."""
    from PIL import Image

    for domain, seed in (("a", 31), ("b", 32)):
        for split, n, s in (("train", LIGHT["train_images"], seed), ("test", LIGHT["test_images"], seed + 100)):
            folder = os.path.join(root, domain, split)
            if os.path.isdir(os.path.join(folder, "y")):
                continue
            x, y = data.synthetic_em(n, LIGHT["side"], LIGHT["side"], seed=s, domain=domain)
            for sub in ("x", "y"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            for i in range(n):
                Image.fromarray(x[i]).save(os.path.join(folder, "x", f"{i:03d}.png"))
                Image.fromarray(y[i] * 255).save(os.path.join(folder, "y", f"{i:03d}.png"))
    return os.path.join(root, "a"), os.path.join(root, "b")


def baseline_cell(row, source, target, seed, out, light, device):
    """Train one Table A.1 baseline on the source through train.main, then score it on the target."""
    score_path = os.path.join(out, "target.json")
    if os.path.isfile(score_path):
        with open(score_path) as f:
            return json.load(f)["test_iou_f"]
    arch, size = ("unetr2d", LIGHT["unetr_size"] if light else "base") if row == "unetr2d_base" else ("attention_unet", None)
    argv = ["--arch", arch, "--data", source, "--seed", str(seed), "--device", device]
    argv += ["--size", size] if size else []
    argv += {"attention_unet_clahe": ["--preprocess", "clahe"],
             "attention_unet_hm": ["--preprocess", "hist_match", "--match-to", target]}.get(row, [])
    if light:
        argv += ["--tile", str(LIGHT["tile"]), "--filters", str(LIGHT["filters"]), "--epochs", str(LIGHT["epochs"]),
                 "--patience", str(LIGHT["epochs"]), "--batch-size", str(LIGHT["batch_size"]), "--lr", str(LIGHT["lr"]),
                 "--batch-norm", "--bn-momentum", str(LIGHT["bn_momentum"]), "--threads", str(LIGHT["threads"])]
    resume = os.path.isfile(os.path.join(out, "args.json")) and not os.path.isfile(os.path.join(out, "results.json"))
    if not os.path.isfile(os.path.join(out, "results.json")):
        train.main(["--out", out, "--resume", "--device", device] if resume else argv + ["--out", out])
    metrics = train.main(["--eval-only", os.path.join(out, "best.pt"), "--data", target, "--device", device])
    models.save_atomic({"test_iou_f": metrics["test_iou_f"], "source": source, "target": target}, score_path)
    return metrics["test_iou_f"]


def ynet_cell(source, target, seed, out, light, device):
    score_path = os.path.join(out, "target.json")
    if os.path.isfile(score_path):
        with open(score_path) as f:
            return json.load(f)["test_iou_f"]
    argv = ["--source", source, "--target", target, "--seed", str(seed), "--device", device, "--out", out]
    if light:
        argv += ["--crops", str(LIGHT["crops"]), "--tile", str(LIGHT["tile"]), "--filters", str(LIGHT["filters"]),
                 "--stage-epochs", *map(str, LIGHT["stage_epochs"]), "--stage-lr", *map(str, LIGHT["stage_lr"]),
                 "--batch-size", str(LIGHT["batch_size"]), "--batch-norm", "--bn-momentum", str(LIGHT["bn_momentum"])]
    if os.path.isdir(out):
        argv.append("--resume")
    metrics = adapt(parse_args(argv))
    models.save_atomic({"test_iou_f": metrics["test_iou_f"], "source": source, "target": target}, score_path)
    return metrics["test_iou_f"]


def run_directions_apart(args, root):
    """Each direction of the table in a process of its own, side by side (--jobs 2); their cells land in
    root, where the table below then finds them finished. Output goes to root/direction-K.log."""
    os.makedirs(root, exist_ok=True)
    children = []
    for d in (0, 1):
        argv = [sys.executable, os.path.abspath(__file__), "--table", "--direction", str(d), "--out", root,
                "--repeats", str(args.repeats), "--device", args.device] + (["--light"] if args.light else [])
        argv += ["--source", args.source, "--target", args.target] if args.source else []
        log = open(os.path.join(root, f"direction-{d}.log"), "a")
        children.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
    print(f"both directions at once, one process each; progress in {root}/direction-0.log and direction-1.log")
    failed = []
    for d, (child, log) in enumerate(children):
        if child.wait() != 0:
            failed.append(os.path.join(root, f"direction-{d}.log"))
        log.close()
    if failed:
        raise train.RunError(f"a direction of the table failed; see {' and '.join(failed)}")


def table(args):
    """Table A.1 in the thesis's layout, both directions, our mean ± std beside the thesis's."""
    started = train.time.perf_counter()
    light = args.light or not (args.source and args.target)
    root = args.out or os.path.join("runs", "table_A1")
    source, target = (args.source, args.target) if args.source else light_data(os.path.join(root, "data"))
    names = ("a", "b") if not args.source else tuple(os.path.basename(os.path.normpath(p)) for p in (source, target))
    directions = [(source, target, f"{names[0]} -> {names[1]}"), (target, source, f"{names[1]} -> {names[0]}")]
    if light:
        torch.set_num_threads(LIGHT["threads"])  # README "Threads": faster, and two such processes share 2 cores
    jobs = args.jobs or (LIGHT["jobs"] if light else 1)
    if jobs > 1 and args.direction is None:
        run_directions_apart(argparse.Namespace(**{**vars(args), "light": light}), root)
    ours = {}
    for row in THESIS_TABLE:
        if row == "damt_net":
            continue
        for d, (src, tgt, label) in enumerate(directions):
            if args.direction is not None and d != args.direction:
                continue
            scores = []
            for seed in range(args.repeats):
                cell = os.path.join(root, f"{names[d]}-to-{names[1 - d]}", row, f"seed-{seed}")
                if row == "attention_ynet_hm":
                    scores.append(ynet_cell(src, tgt, seed, cell, light, args.device))
                else:
                    scores.append(baseline_cell(row, src, tgt, seed, cell, light, args.device))
            ours[(row, d)] = scores
    if args.direction is not None:
        return ours  # one direction of run_directions_apart: the parent prints the table
    what = "built-in synthetic domains a and b" if not args.source else f"{names[0]} and {names[1]}"
    lines = [f"Table A.1: IoU_F on the target's test set (mean ± std over {args.repeats} run(s)); "
             + what + (", light preset" if light else ""),
             "", f"| method | thesis Lucchi++ -> Kasthuri++ | thesis Kasthuri++ -> Lucchi++ | ours {directions[0][2]} | "
             f"ours {directions[1][2]} |", "|---|---|---|---|---|"]
    for row, (label, t1, t2) in THESIS_TABLE.items():
        cells = [fmt(ours.get((row, d))) for d in (0, 1)]
        if light and row == "unetr2d_base":
            label += f" (ours: {LIGHT['unetr_size'].capitalize()}, light preset)"
        lines.append(f"| {label} | {t1} | {t2} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines)
    print(text)
    print(f"\ntable time {train.clock(train.time.perf_counter() - started)} (cells finished earlier are reused)")
    with open(os.path.join(root, "table_A1.md"), "w") as f:
        f.write(text + "\n")
    models.save_atomic({f"{row}:{directions[d][2]}": v for (row, d), v in ours.items()}, os.path.join(root, "table_A1.json"))
    return ours


def fmt(values):
    if not values:
        return "-"
    values = np.asarray(values)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values[0]:.3f}"


# ---------------------------------------------------------------- command line

def parse_args(argv):
    p = argparse.ArgumentParser(description="Domain adaptation of App. A: the three-stage Attention Y-Net, or "
                                "Table A.1 with --table.")
    p.add_argument("--source", help="labelled data set (train/x, train/y; test/x, test/y for its own score)")
    p.add_argument("--target", help="target data set: train/x is used unlabelled; test/y only for the final score")
    p.add_argument("--out", help="output folder (default runs/adapt-<time>, or runs/table_A1 with --table)")
    p.add_argument("--resume", action="store_true", help="continue in --out inside the stage it stopped in")
    p.add_argument("--table", action="store_true", help="Table A.1, both directions (synthetic without folders)")
    p.add_argument("--light", action="store_true", help="--table with folders: the light preset of the built-in "
                   "domains (128-px crops, F = 8, short runs) instead of the thesis's settings")
    p.add_argument("--jobs", type=train.positive(int), choices=[1, 2], help="--table: run the two directions one "
                   "after the other (1) or side by side (2; the default with the light preset)")
    p.add_argument("--direction", type=int, choices=[0, 1], help=argparse.SUPPRESS)  # one direction (--jobs 2)
    p.add_argument("--repeats", type=train.positive(int), default=1, help="seeds per Table A.1 cell (thesis: 10)")
    p.add_argument("--stage-epochs", type=train.positive(int), nargs=3, metavar=("E1", "E2", "E3"),
                   default=[s.epochs for s in STAGES], help="epochs of the three stages (App. A: 50 40 100)")
    p.add_argument("--stage-lr", type=float, nargs=3, metavar=("L1", "L2", "L3"), default=[s.lr for s in STAGES],
                   help="learning rates of the three stages (App. A: 0.001 0.0002 0.0002)")
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm in the Attention Y-Net (App. A: none)")
    p.add_argument("--bn-momentum", type=float, default=0.01, help="with --batch-norm (torch convention; 0.01 = "
                   "Keras's 0.99)")
    p.add_argument("--crops", type=train.positive(int, 10), default=THESIS_CROPS, help="random crops per data set")
    p.add_argument("--tile", type=train.positive(int, 16), default=THESIS_CROP_SIDE, help="crop side (256)")
    p.add_argument("--filters", type=train.positive(int), default=32, help="initial filters (App. A: 32)")
    p.add_argument("--batch-size", type=train.positive(int), default=1, help="App. A: 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    args = p.parse_args(argv)
    if not args.table and not (args.source and args.target):
        raise train.RunError("name both --source DIR and --target DIR (or use --table)")
    if bool(args.source) != bool(args.target):
        raise train.RunError("--table takes both --source and --target, or neither (built-in synthetic domains)")
    if args.tile % 16:
        raise train.RunError(f"--tile {args.tile}: must be a multiple of 16 (four 2x2 poolings)")
    return args


def adapt(args):
    """The three-stage procedure and its scores: source test set (if labelled) and target test set."""
    device = train.pick_device(args.device)
    args.device = str(device.type)
    args.out = args.out or os.path.join("runs", f"adapt-{train.time.strftime('%Y%m%d-%H%M%S')}")
    if not args.resume and os.path.isdir(args.out) and os.listdir(args.out):
        raise train.RunError(f"--out {args.out} already exists and is not empty; choose a new folder, "
                             "or add --resume to continue the run in it")
    model, domains = run_stages(args, device)
    metrics = score_target(model, args, device, "hist_match", domains["target_hist"])
    results = {"source": args.source, "target": args.target, "stage_epochs": args.stage_epochs, "stage_lr": args.stage_lr,
               "batch_size": args.batch_size, "crops": args.crops,
               "test_iou_f": None if metrics is None else metrics["test_iou_f"],
               "target_metrics": None if metrics is None else {k: v for k, v in metrics.items() if k != "per_slice"}}
    if metrics is None:
        print(f"target {args.target} has no test/y masks: no target score (the model is in {args.out})")
    else:
        print(f"target test IoU_F {metrics['test_iou_f']:.4f} (pooled {metrics['test_iou_f_global']:.4f}); "
              f"outputs in {args.out}")
    models.save_atomic(results, os.path.join(args.out, "results.json"))
    return results


def main(argv=None):
    return train.cli(run_command, argv)


def run_command(argv):
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return table(args) if args.table else adapt(args)
    finally:
        torch.set_num_threads(threads)  # the light table runs on one thread; a caller in this process keeps its own


if __name__ == "__main__":
    main()
