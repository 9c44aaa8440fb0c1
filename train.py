"""Train and evaluate the thesis's networks: the training story of §4.3, top to bottom, and its command.

Thesis: §4.3.1-4.3.2 (data processing and training setup), §4.2 (evaluation of whole test slices), §3.3
and §5.3 (self-supervised pre-training), App. A Eq. 1 (the Attention Y-Net's loss), App. B Table 2.

    python train.py --arch unetr2d --size mini              # demo on the built-in synthetic EM set
    python train.py --arch unetr2d --size base --data DIR   # the thesis protocol on Lucchi++ / Kasthuri++
    torchrun --standalone --nproc_per_node=4 train.py --data DIR ...   # data-parallel (distributed.py)

Read it in order: the loss, one epoch, validation, the loop (`fit`), one run (`train_run`), and at the
bottom the command (flags, the run folder, the seeds, the report). Every setting is a field of one frozen
`presets.RunConfig`, made once from a preset and the flags by `presets.make_config`. Where we differ from
the thesis code: the loss takes logits (BCEWithLogits), and the pretext loss is the MSE between
sigmoid(logits) and the clean image. Shapes: B batch, T tile side, H x W slice.
"""
import contextlib
import csv
import math
import os
import sys
import time
from dataclasses import asdict, replace

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np
import torch
import torch.nn.functional as F

import data
import degrade
import distributed
import evaluate
import models
import presets
import schedules
import synthetic
import thesis_numbers


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------------
# The objective, one epoch, validation.

def dice_loss(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def compute_loss(output, x, y, *, loss="bce", pretext=False, alpha=0.5):
    """The training objective, a pure function of the model's output and the batch.

    Segmentation: BCE on the logits (§4.3.2), plus the Dice loss when `loss` is "bce_dice" (App. B).
    Pretext (`pretext` true, §5.3): MSE between sigmoid(logits) and the clean image y.
    Attention Y-Net, whose output is (segmentation logits, reconstruction in [0, 1]): App. A Eq. 1,
    alpha * MSE(reconstruction, x) + (1 - alpha) * BCE(segmentation, y), where a sample whose mask is
    -1 ("no label", a target image in adapt.py) has a BCE of 0; in a pretext run only the MSE against y.
    """
    if isinstance(output, tuple):  # Attention Y-Net: (segmentation logits, reconstruction in [0, 1])
        seg, rec = output
        if pretext:
            return F.mse_loss(rec, y)
        labelled = (y.flatten(1)[:, 0] >= 0).to(seg.dtype)  # (B,) 1 for a labelled sample, 0 for "no label"
        bce = F.binary_cross_entropy_with_logits(seg, y.clamp(min=0),
                                                 reduction="none").mean(dim=(1, 2, 3))  # (B,)
        return alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).mean()
    if pretext:
        return F.mse_loss(torch.sigmoid(output), y)
    bce = F.binary_cross_entropy_with_logits(output, y)
    return bce + dice_loss(output, y) if loss == "bce_dice" else bce


def batch_loss(model, x, y, cfg, device):
    """(model output, loss) of one batch, under bf16 autocast when cfg.amp."""
    with evaluate.autocast(cfg.amp, device):
        out = model(x)
        return out, compute_loss(out, x, y, loss=cfg.loss, pretext=cfg.pretext, alpha=cfg.alpha)


def train_one_epoch(model, loader, optimizer, scheduler, cfg, device, epoch):
    """One pass over `loader`; returns the mean training loss (under torchrun, of all processes)."""
    from tqdm import tqdm

    model.train()
    total, count = torch.zeros((), device=device), 0
    batches = loader if cfg.workers else data.one_batch_ahead(loader)  # worker processes read ahead already
    quiet = not distributed.is_main() or (not sys.stderr.isatty() and not cfg.progress)
    bar = tqdm(batches, total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               file=sys.stderr, disable=quiet)
    for x, y in bar:
        # (B, 1, T, T): one channel is channels-last already (--channels-last needs only the weights)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = batch_loss(model, x, y, cfg, device)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach() * len(x)
        count += len(x)
        value = distributed.mean(loss.item())  # the one host-device sync per step: bar and NaN check
        if not math.isfinite(value):
            raise NonFiniteLoss(f"the training loss became {value} at epoch {epoch + 1}")
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{scheduler.lr:.2e}")
    distributed.share_buffers(model)  # rank 0's BatchNorm statistics everywhere, for validation
    total_sum, count = distributed.all_sum(float(total), count)
    return total_sum / max(count, 1)


@torch.no_grad()
def validate(model, loader, cfg, device, shared=False):
    """Mean validation loss and, for segmentation, IoU_F pooled over the tiles (NaN, NaN when empty).
    shared: `loader` holds this process's share under torchrun; the sums cover every share."""
    model.eval()
    loss_sum, count, tp, fp, fn = 0.0, 0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # (B, 1, T, T)
        out, loss = batch_loss(model, x, y, cfg, device)
        loss_sum, count = loss_sum + float(loss) * len(x), count + len(x)
        if not cfg.pretext:
            seg = out[0] if isinstance(out, tuple) else out
            pred, mask = (seg.float() > 0).cpu().numpy(), y.cpu().numpy() > 0.5  # logit > 0 <=> prob > 0.5
            a, b, c = evaluate.confusion(pred, mask)
            tp, fp, fn = tp + a, fp + b, fn + c
    if shared:
        loss_sum, count, tp, fp, fn = distributed.all_sum(loss_sum, count, tp, fp, fn)
    if count == 0:  # no validation set (--val-fraction 0)
        return math.nan, math.nan
    return loss_sum / count, math.nan if cfg.pretext else evaluate.iou_from_counts(tp, fp, fn)


# ----------------------------------------------------------------------------------------------
# The loop (§4.3.2) and the small helpers it calls.

def save_checkpoint(path, model, state, meta, optimizer=None, scheduler=None):
    """best.pt (the weights) or, with optimiser, schedule and random state, last.pt (what --resume needs)."""
    if not distributed.is_main():
        return
    obj = {**meta, "model": model.state_dict(), "state": state}
    if optimizer is not None:
        obj.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                   rng=torch.get_rng_state(),
                   cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    models.save_atomic(obj, path)


def resume_from(path, model, optimizer, scheduler):
    """Model, optimiser, schedule and random state of the last finished epoch -> the run's state."""
    ckpt = models.load_checkpoint(path, "--resume", keys=("model", "optimizer", "scheduler", "state", "rng"))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"])
    if ckpt.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    print(f"resuming {os.path.dirname(path)} after epoch {ckpt['state']['epoch']}")
    return ckpt["state"]


def log_epoch(out, state, cfg, label, clock):
    """log.csv (every epoch so far) and one line: losses, IoU_F, seconds, elapsed time and ETA."""
    row = state["history"][-1]
    if distributed.is_main():
        with open(os.path.join(out, "log.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(state["history"])
    now, done = time.perf_counter(), row["epoch"] - clock["first_epoch"]  # epochs run in this session
    # ETA: the epochs to run cost what this session's did, the first (warm-ups, compilation) left out
    clock.setdefault("after_first", now)
    per_epoch = (now - clock["loop"]) if done == 1 else (now - clock["after_first"]) / (done - 1)
    eta = (cfg.epochs - row["epoch"]) * per_epoch
    print(f"{label + '  ' if label else ''}epoch {row['epoch']:3d}/{cfg.epochs}  train loss "
          f"{row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
          + ("" if cfg.pretext else f"val IoU_F {row['val_iou_f']:.3f}  ")
          + f"{row['seconds']:.1f}s  elapsed {cli.clock(now - clock['start'])}  ETA {cli.clock(eta)}",
          flush=True)
    if done == 1 and clock["cpu"] and eta > LONG_ON_A_CPU:
        print(f"note: about {cli.clock(eta)} more on this CPU; --preset cpu trains on real data in a "
              "fixed number of steps, 10-25 minutes on 2 cores (docs/training.md)", flush=True)


LONG_ON_A_CPU = 2 * 3600  # seconds of ETA after which a CPU run names the CPU recipe


def announce(label, meta, model, train_set, val_set, device, cfg):
    """The line before the first epoch: the network (or the stage), its size, the tiles, the steps, the
    device (what the run will cost: its ETA follows the first epoch)."""
    name = label or models.display_name(*(meta["config"][k] for k in ("arch", "size", "filters")))
    steps = distributed.steps_per_epoch(len(train_set), cfg.batch_size)
    print(f"{name}: {models.count_parameters(model)[0]:,} parameters; {len(train_set)} training / "
          f"{len(val_set)} validation tiles of {meta['run']['tile']}px; {steps} steps per epoch, "
          f"{steps * cfg.epochs:,} in all, on {device}")


@contextlib.contextmanager
def stopped_cleanly(last, state):
    """Around the epochs: Ctrl-C says where last.pt stands (a half epoch cannot be resumed: the run goes
    on from the last finished one); a NaN loss becomes the user's one-line error."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\ninterrupted: {last} holds epoch {state['epoch']}; the same command with --resume continues "
              "the run", file=sys.stderr)
        raise
    except NonFiniteLoss as exc:
        raise cli.UsageError(f"{exc}; training stopped and {last} keeps epoch {state['epoch']}; try a "
                             "lower --lr") from None


def fit(model, train_set, val_set, cfg, device, out, *, meta, resume=False, label=""):
    """The training loop of §4.3.2 into folder `out` -> the run's state (None on torchrun's other ranks).

    After every epoch: validation, the schedule, best.pt at the best validation loss so far, and last.pt,
    from which `resume` continues the same curve; both carry `meta` (the model config, the run's settings).
    Only parameters with requires_grad are optimised (adapt.py freezes the encoder so).
    """
    last, best = os.path.join(out, "last.pt"), os.path.join(out, "best.pt")
    clock = {"start": time.perf_counter()}
    val_loader = torch.utils.data.DataLoader(distributed.shard(val_set), batch_size=cfg.batch_size,
                                             num_workers=cfg.workers)
    # 1. The optimiser over the trainable parameters and the schedule over every step (App. B).
    optimizer, scheduler = optimisation(model, cfg, len(train_set))
    # 2. Start from the initial weights (and their validation loss), or where last.pt stopped.
    if resume:
        state = resume_from(last, model, optimizer, scheduler)
    else:
        before = validate(model, val_loader, cfg, device, shared=True)[0]
        state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "history": [], "train_seconds": 0.0,
                 "stopped": False, "val_loss_before": before}
        save_checkpoint(last, model, state, meta, optimizer, scheduler)
    announce(label, meta, model, train_set, val_set, device, cfg)
    net = distributed.training_module(model, device, compile=cfg.compile)  # DDP under torchrun; compiled
    distributed.seed_dropout(cfg.seed, state["epoch"])
    clock.update(loop=time.perf_counter(), first_epoch=state["epoch"], cpu=device.type == "cpu")
    with stopped_cleanly(last, state):
        for epoch in range(state["epoch"], 0 if state["stopped"] else cfg.epochs):
            start = time.perf_counter()
            # 3. One epoch on a fresh order of the samples and fresh augmentations, then validation.
            train_set.set_epoch(epoch)
            loader = distributed.train_loader(train_set, cfg.batch_size, cfg.seed, epoch, cfg.workers,
                                              pin_memory=device.type == "cuda")
            train_loss = train_one_epoch(net, loader, optimizer, scheduler, cfg, device, epoch)
            val_loss, val_iou = validate(model, val_loader, cfg, device, shared=True)
            # 4. The schedule: reduce-on-plateau reads the validation loss (the others step per batch).
            scheduler.epoch_end(val_loss)
            seconds = time.perf_counter() - start
            state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                                     "val_iou_f": val_iou, "lr": scheduler.lr, "seconds": seconds})
            state["epoch"], state["train_seconds"] = epoch + 1, state["train_seconds"] + seconds
            # 5. Keep the best weights (without a validation set, the last ones).
            if val_loss < state["best_val"] or len(val_set) == 0:
                state["best_val"], state["best_epoch"] = val_loss, epoch + 1
                save_checkpoint(best, model, state, meta)
            # 6. Early stopping (§4.3.2): cfg.patience epochs with no better validation loss.
            state["stopped"] = cfg.patience is not None and epoch + 1 - state["best_epoch"] >= cfg.patience
            save_checkpoint(last, model, state, meta, optimizer, scheduler)
            log_epoch(out, state, cfg, label, clock)
            if state["stopped"]:
                print(f"early stopping: no better validation loss for {cfg.patience} epochs")
                break
    if not distributed.is_main():  # evaluation, pictures and results are rank 0's
        return None
    # 7. Restore the best weights (§4.3.2) for the test evaluation, and draw the curves.
    restore_best(model, best, state, meta)
    evaluate.draw_curves(state["history"], os.path.join(out, "curves.png"), cfg.pretext)
    return state


def optimisation(model, cfg, n_train):
    """The optimiser over the trainable parameters, and the schedule over every step of every epoch."""
    optimizer = schedules.make_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad],
                                         cfg.lr, cfg.weight_decay)
    steps = cfg.epochs * distributed.steps_per_epoch(n_train, cfg.batch_size)
    return optimizer, schedules.Scheduler(optimizer, cfg.scheduler, cfg.lr, steps)


def restore_best(model, best, state, meta):
    """best.pt's weights into `model`; when no epoch ran (--epochs 0) the starting weights are the best."""
    if not os.path.exists(best):
        save_checkpoint(best, model, state, meta)
    model.load_state_dict(models.load_checkpoint(best, "best.pt", keys=("model",))["model"])


# ----------------------------------------------------------------------------------------------
# One run: its slices, training and validation sets, network, loop and test evaluation.

def load_slices(run):
    """The run's slices, preprocessed (App. A) -> (the run with what its data decide, {split: (x, y)},
    a line saying what they are). x: n slices (H, W) uint8 (a list when their sizes differ); y: the same
    in {0, 1}, or None in a pretext run (§3.3). A 16-bit data set's intensity map comes from its training
    slices and serves its test slices (and predict.py's) too. Training masks without a single
    mitochondrion are refused: there would be nothing to learn."""
    masks = not run.pretext
    if run.data:
        train, test = data.read_train_test(run.data, masks=masks, intensity=run.intensity)
        if masks and not train.foreground:
            raise data.DataError(f"{run.data}: the training masks hold no foreground pixel, so there is "
                                 f"nothing to learn; check them with python data.py {run.data}")
        run = replace(run, intensity=train.intensity)
        found = {"train": (train.images, train.masks), "test": (test.images, test.masks)}
        line = (f"data: {run.data}, layout {train.layout}: train {data.slices_text(train.images)}, test "
                f"{data.slices_text(test.images)}" + (f"; test: {test.held_out}" if test.held_out else ""))
    else:
        found = synthetic.splits(run.train_images, run.test_images, run.image_side)
        line = (f"data: the built-in synthetic EM set, {run.train_images} train / {run.test_images} test "
                f"slices of {run.image_side}x{run.image_side}")
    if run.preprocess == "hist_match" and run.target_hist is None:  # App. A: the target's mean histogram
        target = data.load_split(run.match_to, "train", masks=False)[0]
        run = replace(run, target_hist=tuple(float(v) for v in degrade.mean_histogram(target)))
    hist = np.asarray(run.target_hist) if run.preprocess == "hist_match" else None
    return run, {s: (degrade.preprocess(x, run.preprocess, hist), y if masks else None)
                 for s, (x, y) in found.items()}, line


def training_sets(run, x, y, seed):
    """(training set, validation set) of §4.3.1-4.3.2 from the run's training slices x, y, split with
    `seed` (data.training_sets, with the run's tile, sampling, hold-out, augmentation and pretext)."""
    noise = degrade.random_degradation(list(run.pretext)) if run.pretext else None
    return data.training_sets(x, y, tile=run.tile, sampling=run.sampling, val_fraction=run.val_fraction,
                              augment=run.augment, rotation=run.rotation, seed=seed, degrade=noise,
                              source=run.data or "the synthetic set")


def build_network(run):
    """The run's network with the thesis's initialisation, its BatchNorm momentum and memory layout."""
    model = models.build_model(run.arch, run.size, run.filters, **run.model_kwargs)
    models.set_bn_momentum(model, run.bn_momentum)
    return model.to(memory_format=torch.channels_last) if run.channels_last else model


def score_test_set(model, run, test_x, test_y, device):
    """Test-set numbers (§4.2): IoU_F and Dice of the whole slices (and their probability maps), or the
    MSE of restored test tiles in a pretext run."""
    if run.pretext:
        tiles = data.TileDataset(data.extract_tiles(test_x, run.tile), None, seed=run.fit.seed,
                                 degrade=degrade.random_degradation(list(run.pretext)))
        loader = torch.utils.data.DataLoader(tiles, batch_size=run.fit.batch_size)
        return {"test_mse": validate(model, loader, run.fit, device)[0]}, None
    probs = evaluate.predict_slices(model, test_x, device, amp=run.fit.amp)
    return evaluate.evaluate_stack(probs, test_y), probs


def train_run(run, slices, device, out, resume=False):
    """One training run (one seed) into folder `out` -> its results (None on torchrun's other ranks).

    resume: continue from out/last.pt (model, optimiser, schedule, history and random state of the
    last finished epoch), so that the curve goes on as if never interrupted.
    """
    torch.manual_seed(run.fit.seed)  # weights and dropout; data order and augmentation have their own seeds
    train_set, val_set = training_sets(run, *slices["train"], run.fit.seed)
    if run.steps:  # a budget of optimiser steps (the cpu preset): the whole epochs nearest it
        per_epoch = distributed.steps_per_epoch(len(train_set), run.fit.batch_size)
        run = replace(run, fit=replace(run.fit, epochs=max(1, round(run.steps / per_epoch))))
    model = build_network(run).to(device)
    network = models.display_name(run.arch, run.size, run.filters)
    if run.init_from and not resume:  # §3.3: fine-tune from a pre-trained run
        print(f"--init-from {run.init_from}: {models.load_matching(model, run.init_from, network)}")
    state = fit(model, train_set, val_set, run.fit, device, out, meta=run.checkpoint_meta, resume=resume)
    if state is None:
        return None
    (test_x, test_y), sized = slices["test"], models.ARCHS[run.arch]["sized"]
    metrics, probs = score_test_set(model, run, test_x, test_y, device)
    for i in range(min(3, 0 if probs is None else len(probs))):
        evaluate.save_overlay(test_x[i], probs[i], test_y[i], os.path.join(out, f"pred_{i}.png"))
    params, params_keras = models.count_parameters(model)
    results = {"arch": run.arch, "size": run.table_size, "filters": run.filters,
               "params": params, "params_with_bn_statistics": params_keras,
               "thesis_params_millions": thesis_numbers.params(run.arch, run.table_size, run.filters),
               "task": "pretext" if run.pretext else "segmentation", "epochs_run": state["epoch"],
               "best_epoch": state["best_epoch"], "train_seconds": round(state["train_seconds"], 2),
               "val_loss_before": state["val_loss_before"], "best_val_loss": state["best_val"], **metrics,
               **evaluate.inference_numbers(model, run.tile if sized else 256, device, run.fit.amp),
               "device": str(device), "out": out, "run": asdict(run)}
    cli.write_json(results, os.path.join(out, "results.json"))
    return results


def train_seeds(run, slices, device, out, resume=False):
    """run.repeats runs with seeds seed, seed + 1, ... (folders seed-k when more than one) -> results.
    With `resume`, finished seeds are read back and an interrupted one continues from its last.pt."""
    results = []
    for k in range(run.repeats):
        folder = out if run.repeats == 1 else os.path.join(out, f"seed-{k}")
        one = replace(run, repeats=1, fit=replace(run.fit, seed=run.fit.seed + k))
        if resume and os.path.isfile(os.path.join(folder, "results.json")):
            results.append(cli.read_json(os.path.join(folder, "results.json")))  # finished before
            continue
        os.makedirs(folder, exist_ok=True)
        results.append(train_run(one, slices, device, folder,
                                 resume=resume and os.path.isfile(os.path.join(folder, "last.pt"))))
    return results


# ----------------------------------------------------------------------------------------------
# The command: python train.py [flags]. Flags default to None: the preset's value (presets.py).

def parse_args(argv):
    p = cli.ArgumentParser(description="Train and evaluate U-Net / UNETR-2D / YNETR-2D for mitochondria "
                           "segmentation (thesis §4.3). Without --data: a demo on the built-in synthetic EM "
                           "set.")
    add = p.add_argument
    add("--arch", choices=list(models.ARCHS), help="network (Tables 5.1-5.4, App. A; unetr2d)")
    add("--size", choices=["mini", "small", "base"], help="transformer size (Table 5.3; mini)")
    add("--filters", type=cli.at_least(int), help="initial filters F (default: 16 U-Net family, 32 others)")
    add("--data", help=f"a data-set folder: {data.LAYOUT_HELP} (python data.py DIR checks one)")
    add("--preset", choices=list(presets.PRESETS), help="settings (presets.py): thesis with --data, demo "
        "without; every flag below overrides its preset's value")
    add("--out", help="output folder (default runs/<arch>-<size>-<time>)")
    add("--resume", action="store_true", help="continue the run in --out from its last.pt")
    add("--summary", action="store_true", help="print the parameter count beside the thesis's and exit")
    add("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    presets.add_setting_flags(p)  # every setting's flag, beside the defaults it overrides
    args = p.parse_args(argv)
    if args.init and args.init not in ("glorot_uniform", "he_normal"):
        hint = f"; to start from a checkpoint use --init-from {args.init}" * os.path.exists(args.init)
        raise cli.UsageError(f"--init {args.init}: a kernel initialiser, glorot_uniform or he_normal{hint}")
    return args


PROGRAM = ("out", "resume", "summary", "device", "preset")  # how to run, not what a run is
MACHINE = ("device", "workers", "threads", "progress")  # what --resume may change


def resumed_config(out, argv, machine):
    """--resume: the run's own settings from OUT/run.json; only the machine's (MACHINE) may change."""
    path = os.path.join(out or "", "run.json")
    if not out or not os.path.isfile(path):
        raise cli.UsageError(f"--resume: {path} does not exist; name the folder of an earlier run with --out")
    ignored = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - {"--out", "--resume"}
                     - {f"--{k}" for k in MACHINE})
    if ignored:
        print(f"note: resuming with the run's own settings; ignored {' '.join(ignored)}", file=sys.stderr)
    run = presets.RunConfig.from_dict(cli.read_json(path, "run.json"))
    fit = {k: machine[k] for k in ("workers", "progress") if machine.get(k) is not None}
    return replace(run, threads=machine.get("threads") or run.threads, fit=replace(run.fit, **fit))


def prepare_out(run, out, resume=False):
    """The run folder: missing or empty for a new run (nothing a user has is overwritten), with run.json."""
    if not resume:
        cli.refuse_nonempty(out, hint="choose a new folder, or add --resume to continue the run in it")
        os.makedirs(out, exist_ok=True)
        cli.write_json(asdict(run), os.path.join(out, "run.json"))
    return out


def train_command(argv):
    """python train.py ...: the settings, the data (refused before any folder exists), the run folder,
    each seed's run, the report. A caller in this process keeps its torch thread count."""
    started = time.perf_counter()
    try:
        args = parse_args(argv)
        given = {k: v for k, v in vars(args).items() if k not in PROGRAM}
        if args.summary:  # the network at the thesis's settings (unless flags say otherwise) beside its count
            run = presets.make_config(preset=args.preset or "thesis", **given)
            thesis = thesis_numbers.params(run.arch, run.table_size, run.filters)
            return print("\n".join(models.summary(run.arch, run.size, run.filters, run.model_kwargs, thesis)))
        device = cli.pick_device(args.device)
        if args.resume:
            run = resumed_config(args.out, argv, vars(args))
        else:
            run = presets.make_config(preset=args.preset, device_type=device.type, **given)
        evaluate.check_amp(run.fit.amp, device)  # refused before any folder exists, as bad data below
        if run.init_from:
            models.check_init_from(run.init_from, run.arch, run.size, run.filters, run.model_kwargs)
        device = distributed.join_torchrun(device)
        run, slices, line = load_slices(run)  # bad data is refused here, before the run folder exists
        print(line)
        distributed.check_batch(run.fit.batch_size)
        out = args.out or os.path.join("runs", f"{run.arch}-{run.table_size or 'cnn'}-"
                                               f"{time.strftime('%Y%m%d-%H%M%S')}")
        out = distributed.from_rank0(prepare_out, run, out, args.resume)
        how = "picked automatically" if args.device == "auto" else "as asked"
        print(f"device: {device} ({how}){distributed.describe(run.fit.batch_size)}")
        thesis = {**presets.THESIS, "filters": models.ARCHS[run.arch]["filters"]}
        changed = presets.differences({**asdict(run), **asdict(run.fit)}, thesis)
        print(f"preset {run.preset}: " + (changed or "the thesis protocol (§4.3.2)"))
        with cli.torch_threads(run.threads):  # docs/speed.md: the demo's small tensors run fastest on one
            results = train_seeds(run, slices, device, out, resume=args.resume)
        if not distributed.is_main():
            return None
        evaluate.report(results, out, run_settings=asdict(run), pretext=bool(run.pretext), data_name=run.data,
                        arch=run.arch, size=run.table_size)
        print(f"total wall time {cli.clock(time.perf_counter() - started)}")
        return results[0] if run.repeats == 1 else results
    finally:
        distributed.leave()


def main(argv=None):
    return cli.main(train_command, argv)


if __name__ == "__main__":
    main()
