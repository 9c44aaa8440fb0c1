"""Unsupervised domain adaptation across microscopes (thesis Appendix A, Table A.1).

Thesis: App. A "Methodology" (histogram matching to the mean target histogram with the zero-peak
fix; the Attention Y-Net of Fig. A.1 and its loss alpha * MSE + (1 - alpha) * BCE, Eq. 1, with
BCE = 0 for unlabelled images; the three training steps), App. A "Results" and Table A.1 (train on
one data set, test on the other: UNETR-2D Base and Attention U-Net with no adaptation, with CLAHE
[68], with histogram matching, and the Attention Y-Net with histogram matching). The reference code
is danifranco/EM_domain_adaptation (ref. [26]).

    python adapt.py --source LUCCHI --target KASTHURI          # the three-stage Attention Y-Net
    python adapt.py --table                                     # Table A.1 on the built-in synthetic domains
    python adapt.py --table --source LUCCHI --target KASTHURI   # Table A.1 with the thesis's settings
    python adapt.py --table --light --source S --target T       # the light preset on your own folders

This file is the method: which images each stage trains on, with which loss, optimiser and schedule
(`STAGES`), the crops, the unlabelled target, the frozen encoder and the scores. Every stage runs
through `train.fit` with a FitConfig made from its row of STAGES; the baselines of Table A.1 are
training runs of runs.py. Target masks are read for the final score only.
Shapes: n crops, T crop side, H x W a slice; NumPy comments give dtype and range.
"""
import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle CPU threads sleep, never spin
import numpy as np
import torch

import cli
import data
import degrade
import evaluate
import models
import presets
import runs
import synthetic
import thesis_numbers
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


# App. A, "Multi-task neural networks": three steps, each with its own optimiser and schedule.
STAGES = (
    Stage("joint", 0.98, "sgd", 1e-3, "plateau", 7, 50, source="raw", target=True, frozen=False),
    Stage("reconstruction", 1.0, "adam", 2e-4, "plateau", 6, 40, source="matched", target=True, frozen=False),
    Stage("segmentation", 0.0, "adam", 2e-4, "onecycle", 15, 100, source="matched", target=False,
          frozen=True),
)


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run (presets.ADAPT, or ADAPT_LIGHT); stage_epochs/stage_lr None: STAGES's."""
    source: str
    target: str
    crops: int
    tile: int
    filters: int
    batch_size: int
    batch_norm: bool
    bn_momentum: float
    stage_epochs: tuple
    stage_lr: tuple
    seed: int = 0


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


def load_domains(cfg):
    """Source crops with masks, target crops without, split 90/10 (App. A), and the target histogram."""
    rng = np.random.default_rng([cfg.seed, 2022])
    source = data.warn_notes(data.read_split(cfg.source, "train", masks=True))
    # its masks are never read here
    target = data.warn_notes(data.read_split(cfg.target, "train", masks=False))
    print(f"source {cfg.source}, layout {source.layout}: {len(source.images)} training slices; target "
          f"{cfg.target}, layout {target.layout}: {len(target.images)} training slices, unlabelled")
    (source_x, source_y), target_x = (source.images, source.masks), target.images
    sx, sy = random_crops(source_x, source_y, cfg.crops, cfg.tile, rng)
    tx, _ = random_crops(target_x, None, cfg.crops, cfg.tile, rng)
    s_train, s_val = data.split_validation(cfg.crops, 0.1, seed=cfg.seed)
    t_train, t_val = data.split_validation(cfg.crops, 0.1, seed=cfg.seed + 1)
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
        tiles = data.TileDataset(domains[split], None, augment=split == "target", seed=seed + 1,
                                 rotation=rotation)
        return Unlabelled(tiles)

    if stage.target:
        return (Mixed([source("source"), target("target")]),
                Mixed([source("source_val"), target("target_val")]))
    return source("source"), source("source_val")


# ---------------------------------------------------------------- the three stages

def stage_config(cfg, k, target_hist):
    """The RunConfig of stage k: the Attention Y-Net, its row of STAGES, and (from stage 2 on) the
    histogram matching that its checkpoints then carry to predict.py."""
    stage = STAGES[k]
    matched = {"preprocess": "hist_match", "match_to": cfg.target,
               "target_hist": tuple(float(v) for v in target_hist)} if stage.source == "matched" else {}
    return runs.make_config(
        "attention_ynet", preset="thesis", data=cfg.source, filters=cfg.filters, tile=cfg.tile,
        batch_size=cfg.batch_size, epochs=(cfg.stage_epochs or [s.epochs for s in STAGES])[k],
        lr=(cfg.stage_lr or [s.lr for s in STAGES])[k], optimizer=stage.optimizer, scheduler=stage.scheduler,
        patience=stage.patience, alpha=stage.alpha, seed=cfg.seed, batch_norm=cfg.batch_norm or None,
        bn_momentum=cfg.bn_momentum, **matched)


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


def run_stages(cfg, device, out):
    """The three-stage Attention Y-Net into out/stageK-NAME; a finished stage is reused, an interrupted
    one resumed from its last.pt. Returns the model and the domains."""
    domains = load_domains(cfg)
    torch.manual_seed(cfg.seed)
    model = train.build(stage_config(cfg, 0, domains["target_hist"])).to(device)
    for k, stage in enumerate(STAGES):
        run, folder = (stage_config(cfg, k, domains["target_hist"]),
                       os.path.join(out, f"stage{k + 1}-{stage.name}"))
        done = os.path.join(folder, "done.json")
        freeze_encoder(model, stage.frozen)
        if os.path.isfile(done):  # finished before an interruption: take its best weights and go on
            best = models.load_checkpoint(os.path.join(folder, "best.pt"), "best.pt", keys=("model",))
            model.load_state_dict(best["model"])
            print(f"stage {k + 1} ({stage.name}): done earlier, reusing {folder}")
            continue
        os.makedirs(folder, exist_ok=True)
        train_set, val_set = stage_datasets(stage, domains, cfg.seed, run.rotation)
        print(f"stage {k + 1} ({stage.name}): alpha {stage.alpha}, {stage.optimizer} lr {run.fit.lr} "
              f"{stage.scheduler}, patience {stage.patience}, {run.fit.epochs} epochs, encoder "
              f"{'frozen' if stage.frozen else 'trained'}, {len(train_set)} training / {len(val_set)} "
              "validation crops")
        config = {"arch": run.arch, "size": run.size, "filters": run.filters,
                  "model_kwargs": run.model_kwargs}
        state = train.fit(model, train_set, val_set, run.fit, device, folder,
                          meta={"config": config, "run": asdict(run)},
                          resume=os.path.isfile(os.path.join(folder, "last.pt")),
                          label=f"stage {k + 1} {stage.name}")
        cli.write_json({"stage": stage.name, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                        "best_val_loss": state["best_val"]}, done)
    freeze_encoder(model, False)
    return model, domains


def score_target(model, target, device, target_hist):
    """IoU_F on the target's test set after histogram matching (the only place target masks are read),
    or None when the target has no test masks."""
    if not os.path.isdir(data.find_layout(target)[1]["test"][1]):
        return None
    test_x, test_y = data.load_split(target, "test", masks=True)
    probs = evaluate.predict_slices(model, degrade.preprocess(test_x, "hist_match", target_hist), device)
    return evaluate.evaluate_stack(probs, test_y)


def adapt(cfg, device, out, resume=False):
    """The three-stage procedure and its score on the target's test set (if it has masks) -> results."""
    if not resume:
        cli.refuse_nonempty(out, hint="choose a new folder, or add --resume to continue the run in it")
    model, domains = run_stages(cfg, device, out)
    metrics = score_target(model, cfg.target, device, domains["target_hist"])
    results = {**asdict(cfg), "test_iou_f": None if metrics is None else metrics["test_iou_f"],
               "target_metrics": None if metrics is None else {k: v for k, v in metrics.items()
                                                               if k != "per_slice"}}
    if metrics is None:
        print(f"target {cfg.target} has no test masks: no target score (the model is in {out})")
    else:
        print(f"target test IoU_F {metrics['test_iou_f']:.4f} (pooled {metrics['test_iou_f_global']:.4f}); "
              f"outputs in {out}")
    cli.write_json(results, os.path.join(out, "results.json"))
    return results


def adapt_config(source, target, light=False, seed=0, **given):
    """AdaptConfig from presets.ADAPT (or ADAPT_LIGHT) and the settings given (None: the preset's)."""
    preset = presets.ADAPT_LIGHT if light else presets.ADAPT
    settings = {**preset, **{k: v for k, v in given.items() if v is not None}}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    if settings["tile"] % 16:
        raise cli.UsageError(f"--tile {settings['tile']}: must be a multiple of 16 (four 2x2 poolings)")
    return AdaptConfig(source=source, target=target, seed=seed, **settings)


# ---------------------------------------------------------------- Table A.1

@dataclass(frozen=True)
class TableOptions:
    """What `table` computes: both directions between source and target (None: the built-in domains
    "a" and "b"), `repeats` seeds per cell, the light preset or the thesis's settings."""
    source: str = None
    target: str = None
    out: str = os.path.join("runs", "table_A1")
    repeats: int = 1
    light: bool = True
    jobs: int = 1
    rows: tuple = None        # keys of thesis_numbers.TABLE_A1 to train (None: all)
    device: str = "auto"
    drop_last: bool = False   # delete each cell's last.pt once it is finished


def scored(out, source, target, score):
    """A Table A.1 cell's target IoU_F: read from out/target.json once the cell is done, else score() and
    keep it there."""
    path = os.path.join(out, "target.json")
    if os.path.isfile(path):
        return cli.read_json(path)["test_iou_f"]
    value = score()
    cli.write_json({"test_iou_f": value, "source": source, "target": target}, path)
    return value


def baseline_cell(row, source, target, seed, out, opts, device):
    """Train one Table A.1 baseline on the source (a runs.py run), then score it on the target."""
    def score():
        arch, size = (("unetr2d", "mini" if opts.light else "base") if row == "unetr2d_base"
                      else ("attention_unet", None))
        changes = {"attention_unet_clahe": {"preprocess": "clahe"},
                   "attention_unet_hm": {"preprocess": "hist_match", "match_to": target}}.get(row, {})
        run = runs.make_config(arch, preset="light" if opts.light else "thesis", data=source, seed=seed,
                               size=size, device_type=device.type, **changes)
        runs.train_in(out, run, device, drop_last=opts.drop_last)
        return runs.evaluate_checkpoint(os.path.join(out, "best.pt"), device, data_dir=target)["test_iou_f"]
    return scored(out, source, target, score)


def ynet_cell(source, target, seed, out, opts, device):
    """The three-stage Attention Y-Net of App. A from source to target, scored on the target."""
    def score():
        cfg = adapt_config(source, target, light=opts.light, seed=seed)
        return adapt(cfg, device, out, resume=os.path.isdir(out))["test_iou_f"]
    return scored(out, source, target, score)


def direction_in_child(opts, direction, log):
    """One direction of the table in a process of its own, its output in `log`; True when it finished."""
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            table_cells(opts, only=direction)
            return True
        except cli.UsageError as exc:
            print(f"error: {exc}")
            return False


def process_pool():
    """Two spawned worker processes (a fresh interpreter each, one torch thread each)."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=2,
                                                  mp_context=multiprocessing.get_context("spawn"))


def run_directions_apart(opts):
    """Both directions at once, one process each (jobs 2), their cells written under opts.out, where
    the table then finds them finished. Output goes to opts.out/direction-K.log."""
    os.makedirs(opts.out, exist_ok=True)
    logs = [os.path.join(opts.out, f"direction-{d}.log") for d in (0, 1)]
    print(f"both directions at once, one process each; progress in {logs[0]} and {logs[1]}")
    with process_pool() as pool:
        finished = [f.result() for f in [pool.submit(direction_in_child, opts, d, log)
                                         for d, log in enumerate(logs)]]
    failed = [log for log, ok in zip(logs, finished) if not ok]
    if failed:
        raise cli.UsageError(f"a direction of the table failed; see {' and '.join(failed)}")


def domains_of(opts):
    """(source, target, their two names) of the table: opts' folders, or the built-in domains a and b."""
    if opts.source:
        return opts.source, opts.target, tuple(os.path.basename(os.path.normpath(p))
                                               for p in (opts.source, opts.target))
    root, light = os.path.join(opts.out, "data"), presets.LIGHT
    folders = [synthetic.write_dataset(os.path.join(root, d), light["train_images"], light["test_images"],
                                       light["image_side"], seed, domain=d)
               for d, seed in (("a", 31), ("b", 32))]
    return folders[0], folders[1], ("a", "b")


def table_cells(opts, only=None):
    """{(row, direction): [IoU_F per seed]} for the rows asked for, in one direction (`only`) or both."""
    source, target, names = domains_of(opts)
    directions = [(source, target), (target, source)]
    device, ours = cli.pick_device(opts.device), {}
    every = [r for r in thesis_numbers.TABLE_A1 if r != "damt_net"]
    # light: one thread is faster at this size, and two such processes share 2 cores
    with cli.torch_threads(presets.LIGHT["threads"] if opts.light else None):
        for row in every if opts.rows is None else opts.rows:
            for d, (src, tgt) in enumerate(directions):
                if only is not None and d != only:
                    continue
                cells = [os.path.join(opts.out, f"{names[d]}-to-{names[1 - d]}", row, f"seed-{seed}")
                         for seed in range(opts.repeats)]
                ours[(row, d)] = [ynet_cell(src, tgt, seed, cell, opts, device) if row == "attention_ynet_hm"
                                  else baseline_cell(row, src, tgt, seed, cell, opts, device)
                                  for seed, cell in enumerate(cells)]
    return ours


def table(opts):
    """Table A.1 in the thesis's layout, both directions, our mean ± std beside the thesis's."""
    started = time.perf_counter()
    names = domains_of(opts)[2]  # the built-in domains are written here, once, before any worker starts
    if opts.jobs > 1:
        run_directions_apart(opts)
    ours = table_cells(opts)
    text = format_table(ours, opts, names)
    print(text)
    print(f"\ntable time {cli.clock(time.perf_counter() - started)} (cells finished earlier are reused)")
    with open(os.path.join(opts.out, "table_A1.md"), "w") as f:
        f.write(text + "\n")
    cli.write_json({f"{row}:{names[d]} -> {names[1 - d]}": v for (row, d), v in ours.items()},
                   os.path.join(opts.out, "table_A1.json"))
    return ours


def format_table(ours, opts, names):
    """Markdown: the thesis's rows and columns, then ours for each direction."""
    what = "built-in synthetic domains a and b" if not opts.source else f"{names[0]} and {names[1]}"
    lines = [f"Table A.1: IoU_F on the target's test set (mean ± std over {opts.repeats} run(s)); {what}"
             + (", light preset" if opts.light else ""), "",
             f"| method | thesis Lucchi++ -> Kasthuri++ | thesis Kasthuri++ -> Lucchi++ | ours {names[0]} -> "
             f"{names[1]} | ours {names[1]} -> {names[0]} |", "|---|---|---|---|---|"]
    for row, (label, t1, t2) in thesis_numbers.TABLE_A1.items():
        if opts.light and row == "unetr2d_base":
            label += " (ours: Mini, light preset)"  # Base costs ~50x Mini per step at this size
        lines.append(f"| {label} | {t1} | {t2} | {fmt(ours.get((row, 0)))} | {fmt(ours.get((row, 1)))} |")
    return "\n".join(lines)


def fmt(values):
    if not values:
        return "-"
    values = np.asarray(values)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values[0]:.3f}"


# ---------------------------------------------------------------- command line

def parse_args(argv):
    p = cli.ArgumentParser(description="Domain adaptation of App. A: the three-stage Attention Y-Net, or "
                           "Table A.1 with --table.")
    p.add_argument("--source", help="labelled data set (train images and masks; test masks for its own "
                   "score)")
    p.add_argument("--target", help="target data set: its train images are used unlabelled, its test masks "
                   "only for the final score")
    p.add_argument("--out", help="output folder (default runs/adapt-<time>, or runs/table_A1 with --table)")
    p.add_argument("--resume", action="store_true", help="continue in --out inside the stage it stopped in")
    p.add_argument("--table", action="store_true",
                   help="Table A.1, both directions (synthetic without folders)")
    p.add_argument("--light", action="store_true", help="the light preset (presets.LIGHT, ADAPT_LIGHT) on "
                   "your folders; the default of --table without folders")
    p.add_argument("--jobs", type=int, choices=[1, 2], help="--table: the two directions one after the other "
                   "(1) or side by side (2; the default with the light preset)")
    p.add_argument("--repeats", type=cli.at_least(int), default=1,
                   help="seeds per Table A.1 cell (thesis: 10)")
    p.add_argument("--stage-epochs", type=cli.at_least(int), nargs=3, metavar=("E1", "E2", "E3"),
                   help="epochs of the three stages (App. A: 50 40 100)")
    p.add_argument("--stage-lr", type=cli.at_least(float, 0.0), nargs=3, metavar=("L1", "L2", "L3"),
                   help="learning rates of the three stages (App. A: 0.001 0.0002 0.0002)")
    p.add_argument("--batch-norm", action="store_true", default=None,
                   help="BatchNorm in the Y-Net (App. A: none)")
    p.add_argument("--bn-momentum", type=cli.weight,
                   help="with --batch-norm (torch convention; 0.01 = Keras's 0.99)")
    p.add_argument("--crops", type=cli.at_least(int, 10), help="random crops per data set (App. A: 1000)")
    p.add_argument("--tile", type=cli.at_least(int, 16), help="crop side (App. A: 256)")
    p.add_argument("--filters", type=cli.at_least(int), help="initial filters (App. A: 32)")
    p.add_argument("--batch-size", type=cli.at_least(int), help="App. A: 1")
    p.add_argument("--seed", type=cli.at_least(int, 0), default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    args = p.parse_args(argv)
    if not args.table and not (args.source and args.target):
        raise cli.UsageError("name both --source DIR and --target DIR (or use --table)")
    if bool(args.source) != bool(args.target):
        raise cli.UsageError("--table takes both --source and --target, or neither (built-in synthetic "
                             "domains)")
    return args


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    args = parse_args(argv)
    if args.table:
        light = args.light or not args.source
        return table(TableOptions(source=args.source, target=args.target, repeats=args.repeats, light=light,
                                  out=args.out or TableOptions.out, jobs=args.jobs or (2 if light else 1),
                                  device=args.device))
    cfg = adapt_config(args.source, args.target, light=args.light, seed=args.seed, crops=args.crops,
                       tile=args.tile, filters=args.filters, batch_size=args.batch_size,
                       batch_norm=args.batch_norm, bn_momentum=args.bn_momentum,
                       stage_epochs=args.stage_epochs, stage_lr=args.stage_lr)
    out = args.out or os.path.join("runs", f"adapt-{time.strftime('%Y%m%d-%H%M%S')}")
    return adapt(cfg, cli.pick_device(args.device), out, resume=args.resume)


if __name__ == "__main__":
    main()
