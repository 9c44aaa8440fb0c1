"""Train and evaluate the thesis's networks: the training story of §4.3, top to bottom.

Thesis: §4.3.1-4.3.2 (data processing and training setup), §4.2 (evaluation of whole test slices),
§3.3 and §5.3 (self-supervised pre-training, Table 5.5), App. A Eq. 1 (the Attention Y-Net's loss),
App. B Table 2 (the hyperparameter search space).

    python train.py --arch unetr2d --size mini              # demo on the built-in synthetic EM set
    python train.py --arch unetr2d --size base --data DIR   # the thesis protocol on Lucchi++ / Kasthuri++
    python train.py --arch unet --summary                   # parameter count beside the thesis's
    torchrun --standalone --nproc_per_node=4 train.py --data DIR ...   # data-parallel (distributed.py)

Read it in order: the loss (`compute_loss`), one epoch (`train_one_epoch`), validation (`validate`), the
loop (`fit`: train, validate, schedule, keep the best, stop early) and one run (`train_run`: data, model,
fit, test evaluation). The loop's settings are a frozen `FitConfig`; a run's, a `runs.RunConfig` holding
it, made once from a preset (presets.py) and the flags by runs.py, which is also the command line.
Where we differ from the thesis code: the loss takes logits (BCEWithLogits) rather than probabilities,
and the pretext loss is the MSE between sigmoid(logits) and the clean image.
Shapes: B batch, T tile side, H x W slice.
"""
import contextlib
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

# Before torch loads OpenMP: idle CPU threads sleep instead of spinning, which made a step 4-6x slower
# on a busy 2-core machine (docs/speed.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
import torch.nn.functional as F

import cli
import data
import degrade
import distributed
import evaluate
import models
import schedules
import thesis_numbers


@dataclass(frozen=True)
class FitConfig:
    """The loop's settings (§4.3.2, App. B); presets.THESIS holds the thesis's values."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str             # adamw | adam | sgd
    scheduler: str             # cosine | onecycle | plateau | none
    patience: int = None       # early stopping on the validation loss; None: never
    loss: str = "bce"          # bce | bce_dice
    alpha: float = 0.5         # App. A Eq. 1: weight of the Attention Y-Net's reconstruction term
    pretext: bool = False      # a denoising pretext (§3.3): MSE loss, no IoU
    seed: int = 0              # the data order of every epoch is drawn from (seed, epoch)
    amp: bool = False          # bf16 autocast
    compile: bool = False      # torch.compile the training module
    workers: int = 0           # DataLoader worker processes
    progress: bool = False     # the per-epoch bar even off a terminal


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
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
               disable=not distributed.is_main() or (not sys.stderr.isatty() and not cfg.progress))
    for x, y in bar:
        # (B, 1, T, T); one channel is already channels-last, so --channels-last needs only the model's
        # weights
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
    now = time.perf_counter()  # the ETA assumes the epochs still to run cost what this session's did
    eta = (cfg.epochs - row["epoch"]) * (now - clock["loop"]) / (row["epoch"] - clock["first_epoch"])
    print(f"{label + '  ' if label else ''}epoch {row['epoch']:3d}/{cfg.epochs}  train loss "
          f"{row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
          + ("" if cfg.pretext else f"val IoU_F {row['val_iou_f']:.3f}  ")
          + f"{row['seconds']:.1f}s  elapsed {cli.clock(now - clock['start'])}  ETA {cli.clock(eta)}",
          flush=True)


def announce(label, meta, model, train_set, val_set, device):
    """The line before the first epoch: the network (or the stage), its size, the tiles, the device."""
    name = label or models.display_name(*(meta["config"][k] for k in ("arch", "size", "filters")))
    print(f"{name}: {evaluate.count_parameters(model)[0]:,} parameters; {len(train_set)} training / "
          f"{len(val_set)} validation tiles of {meta['run']['tile']}px on {device}")


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
    announce(label, meta, model, train_set, val_set, device)
    net = distributed.training_module(model, device, compile=cfg.compile)  # DDP under torchrun; compiled
    distributed.seed_dropout(cfg.seed, state["epoch"])
    clock.update(loop=time.perf_counter(), first_epoch=state["epoch"])
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
# One run: its training and validation sets, network, loop and test evaluation (runs.load_slices reads the
# slices).

def datasets(run, x, y, seed):
    """(training set, validation set) of §4.3.1-4.3.2 from training slices x, y, split with `seed`.

    sampling "tiles": the grid of tiles, a random val_fraction of them held out; "crops": whole slices
    (data.CropDataset cuts fresh windows) and the grid tiles of a random val_fraction of the slices.
    """
    noise = degrade.random_degradation(list(run.pretext)) if run.pretext else None
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    tiles = lambda a: None if a is None else data.extract_tiles(a, run.tile)  # noqa: E731  (n, T, T) uint8
    common = {"augment": run.augment, "seed": seed, "degrade": noise, "rotation": run.rotation}
    if run.sampling == "crops":
        train_idx, val_idx = data.split_validation(len(x), run.val_fraction, seed=seed)  # whole slices
        train_set = data.CropDataset(x[train_idx], pick(y, train_idx), tile=run.tile, **common)
        val = (tiles(x[val_idx]), tiles(pick(y, val_idx)))
    else:
        tx, ty = tiles(x), tiles(y)
        train_idx, val_idx = data.split_validation(len(tx), run.val_fraction, seed=seed)
        train_set = data.TileDataset(tx[train_idx], pick(ty, train_idx), **common)
        val = (tx[val_idx], pick(ty, val_idx))
    val_set = data.TileDataset(*val, augment=False, seed=seed + 10_000, degrade=noise)
    if len(val_set) == 0 and run.val_fraction > 0:
        unit = "slice(s)" if run.sampling == "crops" else f"tile(s) of {run.tile}px"
        raise cli.UsageError(f"{run.data or 'the synthetic set'} gives {len(x)} training {unit}; at least 2 "
                             "are needed (some go to validation): add slices, use a smaller --tile or "
                             "--val-fraction 0")
    return train_set, val_set


def build(run):
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
    train_set, val_set = datasets(run, *slices["train"], run.fit.seed)
    model = build(run).to(device)
    if run.init_from and not resume:  # §3.3: fine-tune from a pre-trained run
        loaded, fresh = models.load_matching(model, run.init_from)
        print(f"--init-from {run.init_from}: loaded {len(loaded)} tensors ({models.module_names(loaded)})"
              + (f"; kept as initialised: {', '.join(fresh)}" if fresh else "; every tensor matched"))
    config = {"arch": run.arch, "size": run.size, "filters": run.filters, "model_kwargs": run.model_kwargs}
    state = fit(model, train_set, val_set, run.fit, device, out, meta={"config": config, "run": asdict(run)},
                resume=resume)
    if state is None:
        return None
    (test_x, test_y), sized = slices["test"], models.ARCHS[run.arch]["sized"]
    metrics, probs = score_test_set(model, run, test_x, test_y, device)
    for i in range(min(3, 0 if probs is None else len(probs))):
        evaluate.save_overlay(test_x[i], probs[i], test_y[i], os.path.join(out, f"pred_{i}.png"))
    params, params_keras = evaluate.count_parameters(model)
    results = {"arch": run.arch, "size": run.size if sized else None, "filters": run.filters,
               "params": params, "params_with_bn_statistics": params_keras,
               "thesis_params_millions": thesis_numbers.params(run.arch, run.size if sized else None,
                                                               run.filters),
               "task": "pretext" if run.pretext else "segmentation", "epochs_run": state["epoch"],
               "best_epoch": state["best_epoch"], "train_seconds": round(state["train_seconds"], 2),
               "val_loss_before": state["val_loss_before"], "best_val_loss": state["best_val"], **metrics,
               **evaluate.inference_numbers(model, run.tile if sized else 256, device, run.fit.amp),
               "device": str(device), "out": out, "run": asdict(run)}
    cli.write_json(results, os.path.join(out, "results.json"))
    return results


# ----------------------------------------------------------------------------------------------
# The command line (flags, presets, the run folder, seeds, the report) is runs.py's.

def main(argv=None):
    import runs  # imported here: runs.py drives this file's train_run

    return cli.main(runs.train_command, argv)


if __name__ == "__main__":
    main()
