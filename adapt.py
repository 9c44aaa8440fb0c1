"""Unsupervised domain adaptation across microscopes (thesis Appendix A, Table A.1).

Thesis: App. A "Methodology" (histogram matching to the mean target histogram with the zero-peak
fix; the Attention Y-Net of Fig. A.1 and its loss alpha * MSE + (1 - alpha) * BCE, Eq. 1, with
BCE = 0 for unlabelled images; the three training steps), App. A "Results" and Table A.1 (train on
one data set, test on the other: UNETR-2D Base and Attention U-Net with no adaptation, with CLAHE
[68], with histogram matching, and the Attention Y-Net with histogram matching). The reference code
is danifranco/EM_domain_adaptation (ref. [26]).

    python adapt.py --source LUCCHI --target KASTHURI          # the three-stage Attention Y-Net
    python adapt.py --light --source S --target T               # the light preset (a CPU budget)
    python reproduce.py A1 --quick                              # Table A.1, whose last row this is

This file is the method: which images each stage trains on, with which loss, optimiser and schedule
(`STAGES`), the crops, the unlabelled target, the frozen encoder and the scores. Every stage runs
through `train.fit` with a FitConfig made from its row of STAGES; Table A.1 (its baselines, trained
by train.py, and this method) is a table of reproduce.py. Target masks are read for the final score
only.
Shapes: n crops, T crop side, H x W a slice; NumPy comments give dtype and range.
"""
import os
import time
from dataclasses import asdict, dataclass

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np
import torch

import data
import degrade
import evaluate
import models
import presets
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
    threads: int      # CPU threads for torch (None: one per core)
    seed: int


# ---------------------------------------------------------------- data (App. A: random crops)

def random_crops(slices, masks, n, side, rng):
    """n random side x side crops of a stack (mirror-padded up to `side` when smaller), the same
    windows from the masks -> ((n, T, T) uint8, (n, T, T) uint8 or None). Slices of different sizes
    (a list) are padded and cropped each on its own."""
    if not isinstance(slices, np.ndarray):
        k = rng.integers(len(slices), size=n)
        picked = [random_crops(slices[i][None], None if masks is None else masks[i][None], 1, side, rng)
                  for i in k]
        return (np.concatenate([x for x, _ in picked]),
                None if masks is None else np.concatenate([y for _, y in picked]))
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


CROPS_STREAM = 2022  # the crops' random stream, apart from the weights' (the run's seed alone)


def load_domains(cfg):
    """Source crops with masks, target crops without, split 90/10 (App. A), and the target histogram."""
    rng = np.random.default_rng([cfg.seed, CROPS_STREAM])
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
            "target": tx[t_train], "target_val": tx[t_val], "target_hist": target_hist,
            "target_intensity": target.intensity}


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
    return presets.make_config(
        "attention_ynet", preset="thesis", data=cfg.source, filters=cfg.filters, tile=cfg.tile,
        batch_size=cfg.batch_size, epochs=(cfg.stage_epochs or [s.epochs for s in STAGES])[k],
        lr=(cfg.stage_lr or [s.lr for s in STAGES])[k], optimizer=stage.optimizer, scheduler=stage.scheduler,
        patience=stage.patience, alpha=stage.alpha, seed=cfg.seed, batch_norm=cfg.batch_norm or None,
        bn_momentum=cfg.bn_momentum, threads=cfg.threads, **matched)


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
    model = train.build_network(stage_config(cfg, 0, domains["target_hist"])).to(device)
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
        state = train.fit(model, train_set, val_set, run.fit, device, folder, meta=run.checkpoint_meta,
                          resume=os.path.isfile(os.path.join(folder, "last.pt")),
                          label=f"stage {k + 1} {stage.name}")
        cli.write_json({"stage": stage.name, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                        "best_val_loss": state["best_val"]}, done)
    freeze_encoder(model, False)
    return model, domains


def score_target(model, target, device, target_hist, intensity=None):
    """IoU_F on the target's test set after histogram matching (the only place target masks are read),
    or None when the target has no test masks. intensity: the target's 16-bit map, from its training
    slices."""
    if not os.path.isdir(data.find_layout(target)[1]["test"][1]):
        return None
    test_x, test_y = data.load_split(target, "test", masks=True, intensity=intensity)
    probs = evaluate.predict_slices(model, degrade.preprocess(test_x, "hist_match", target_hist), device)
    return evaluate.evaluate_stack(probs, test_y)


def adapt(cfg, device, out, resume=False):
    """The three-stage procedure and its score on the target's test set (if it has masks) -> results."""
    if not resume:
        cli.refuse_nonempty(out, hint="choose a new folder, or add --resume to continue the run in it")
    with cli.torch_threads(cfg.threads):
        model, domains = run_stages(cfg, device, out)
        metrics = score_target(model, cfg.target, device, domains["target_hist"], domains["target_intensity"])
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


def adapt_config(source, target, light=False, **given):
    """AdaptConfig from presets.ADAPT (or ADAPT_LIGHT) and the settings given (None: the preset's)."""
    preset = presets.ADAPT_LIGHT if light else presets.ADAPT
    settings = {**preset, **{k: v for k, v in given.items() if v is not None}}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    if settings["tile"] % 16:
        raise cli.UsageError(f"--tile {settings['tile']}: must be a multiple of 16 (four 2x2 poolings)")
    return AdaptConfig(source=source, target=target, **settings)


# ---------------------------------------------------------------- command line

def parse_args(argv):
    p = cli.ArgumentParser(description="Domain adaptation of App. A: the three-stage Attention Y-Net "
                           "(Table A.1: python reproduce.py A1).")
    p.add_argument("--source", required=True, help="labelled data set (train images and masks)")
    p.add_argument("--target", required=True, help="target data set: its train images are used unlabelled, "
                   "its test masks only for the final score")
    p.add_argument("--out", help="output folder (default runs/adapt-<time>)")
    p.add_argument("--resume", action="store_true", help="continue in --out inside the stage it stopped in")
    p.add_argument("--light", action="store_true",
                   help="the light preset (presets.ADAPT_LIGHT): a CPU budget")
    p.add_argument("--stage-epochs", type=cli.at_least(int), nargs=3, metavar=("E1", "E2", "E3"),
                   help="epochs of the three stages (App. A: 50 40 100)")
    p.add_argument("--stage-lr", type=cli.at_least(float, 0.0), nargs=3, metavar=("L1", "L2", "L3"),
                   help="learning rates of the three stages (App. A: 0.001 0.0002 0.0002)")
    p.add_argument("--batch-norm", action="store_true", default=None,
                   help="BatchNorm in the Y-Net (App. A: none)")
    p.add_argument("--bn-momentum", type=cli.unit_interval,
                   help="with --batch-norm (torch convention; 0.01 = Keras's 0.99)")
    p.add_argument("--crops", type=cli.at_least(int, 10), help="random crops per data set (App. A: 1000)")
    p.add_argument("--tile", type=cli.at_least(int, 16), help="crop side (App. A: 256)")
    p.add_argument("--filters", type=cli.at_least(int), help="initial filters (App. A: 32)")
    p.add_argument("--batch-size", type=cli.at_least(int), help="App. A: 1")
    p.add_argument("--seed", type=cli.at_least(int, 0))
    p.add_argument("--threads", type=cli.at_least(int), help="CPU threads for torch (default: one per core; "
                   "1 with --light)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    return p.parse_args(argv)


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    args = parse_args(argv)
    cfg = adapt_config(args.source, args.target, light=args.light, seed=args.seed, crops=args.crops,
                       tile=args.tile, filters=args.filters, batch_size=args.batch_size,
                       batch_norm=args.batch_norm, bn_momentum=args.bn_momentum,
                       stage_epochs=args.stage_epochs, stage_lr=args.stage_lr, threads=args.threads)
    out = args.out or os.path.join("runs", f"adapt-{time.strftime('%Y%m%d-%H%M%S')}")
    return adapt(cfg, cli.pick_device(args.device), out, resume=args.resume)


if __name__ == "__main__":
    main()
