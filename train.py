"""Train and evaluate the thesis's networks: the whole protocol in one file.

Thesis: §4.2 (evaluation, Eq. 4.1-4.2, Fig. 4.2-4.3), §4.3 (data processing and training setup),
§3.3 and §5.3 (self-supervised pre-training, Table 5.5), Tables 5.1-5.4 (models compared), App. A
Eq. 1 (the Attention Y-Net's two-term loss), App. B Table 2 (the hyperparameter search space).

    python train.py --arch unetr2d --size mini              # demo on built-in synthetic EM data
    python train.py --arch unetr2d --size base --data DIR   # thesis protocol on Lucchi++ / Kasthuri++
    python train.py --arch unet --summary                   # parameter count beside the thesis's
    torchrun --standalone --nproc_per_node=4 train.py --data DIR ...   # data-parallel on 4 GPUs

With no `--data` a lighter preset (smaller tiles, F = 8, fewer epochs, higher learning rate; printed at
the start) trains on `data.synthetic_em` so that the program runs on a fresh machine in minutes. With
`--data DIR` the defaults are the thesis's best (§4.3.2, App. B): BCE, AdamW lr 1e-4 wd 1e-5, cosine
decay per step, batch 6, 360 epochs, patience 60 with the best weights restored.

Where we differ from the thesis code: the loss takes logits (BCEWithLogits) instead of probabilities;
the pretext (denoising) loss is MSE between sigmoid(logits) and the clean image; `--init` takes either
a kernel initialiser name (Table 5.1) or a checkpoint to start from (§3.3).
Shapes: B batch, T tile side, H x W slice.
"""
import argparse
import csv
import inspect
import json
import math
import os
import sys
import time

# Before torch loads OpenMP: idle CPU threads sleep instead of spinning. On a 2-core machine that runs
# anything else, spinning threads made a training step 4-6x slower (README, "Speed and scale").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
import torch
import torch.nn.functional as F

import data
import degrade
import distributed
import evaluate
import models
import schedules

# ----------------------------------------------------------------------------------------------
# Settings. The thesis protocol (§4.3.2, App. B) for real data; a lighter preset for the demo.

PROTOCOL = {"tile": 256, "epochs": 360, "patience": 60, "batch_size": 6, "lr": 1e-4, "weight_decay": 1e-5,
            "bn_momentum": 0.01}
# F = 8 halves the cost of a step (convolutions, mostly their backward pass, are ~70% of it),
# channels-last saves another 7-20% on a CPU, and one CPU thread beats two at these tensor sizes. For
# the same number of steps, 48 training images for 30 epochs scored higher than 24 for 60 (0.836 against
# 0.806): more distinct images, fewer passes. README "Speed and scale" has the measurements.
DEMO = {"tile": 128, "filters": 8, "batch_size": 4, "lr": 1e-3, "weight_decay": 1e-5, "bn_momentum": 0.1,
        "channels_last": True, "train_images": 48, "test_images": 8, "image_side": 256, "threads": 1}
# Epochs per arch, so that each demo costs about what 30 epochs of UNETR-2D Mini cost (per epoch, one
# thread: YNETR-2D 1.7x, Attention Y-Net with BatchNorm 1.8x, Attention U-Net with BatchNorm 1.4x,
# U-Net 0.85x).
DEMO_EPOCHS = {"unetr2d": 30, "ynetr2d": 18, "unet": 35, "attention_unet": 22, "attention_ynet": 17}
# Without BatchNorm the attention-gated CNNs predict no mitochondria for their first 10-15 epochs and
# end a short run far behind (README); with it they learn as fast as the others.
DEMO_BATCH_NORM = ("attention_unet", "attention_ynet")
# The data pipeline of §4.3.1-4.3.2 (any-angle bilinear rotation, fixed tiles, 10% held out), used by
# --data and the demo unless PROTOCOL or DEMO names other values; README "Augmentation ablation" says why.
THESIS_DATA = {"rotation": "any", "sampling": "tiles", "val_fraction": 0.1}
DEMO_DATA_SEED = 2022  # the synthetic train/test sets are the same for every run seed


class RunError(Exception):
    """A problem with the user's input or output folder: printed as one line, exit code 2."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RunError("--device mps: Apple's MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


def model_kwargs(args):
    """Constructor keywords from the model flags (None = the arch's thesis default)."""
    kw = {"batch_norm": args.batch_norm, "activation": args.activation, "attention_gates": args.attention_gates,
          "dropout": (args.dropout[0] if len(args.dropout) == 1 else tuple(args.dropout)) if args.dropout else None,
          "init": args.init if args.init in ("glorot_uniform", "he_normal") else None,
          "fused_attention": getattr(args, "fused_attention", None)}
    if models.ARCHS[args.arch]["sized"]:
        kw["img_size"] = args.tile
    kw = {k: v for k, v in kw.items() if v is not None}
    cls = models.ARCHS[args.arch]["cls"]
    accepted = set(inspect.signature(cls).parameters)
    if "kwargs" in accepted:  # AttentionUNet(**kwargs) passes everything on to UNet
        accepted |= set(inspect.signature(cls.__mro__[1]).parameters)
    for key in kw:
        if key not in accepted:
            raise RunError(f"--{key.replace('_', '-')} does not apply to --arch {args.arch}; drop the flag")
    return kw


def preprocess(args, images):
    """--preprocess (App. A) on a stack of (H, W) uint8 slices. For hist_match the target's mean histogram is
    computed once from --match-to's train/x and kept in args (so checkpoints carry it to prediction)."""
    kind = getattr(args, "preprocess", "none")  # checkpoints older than the flag: none
    if kind == "hist_match" and getattr(args, "target_hist", None) is None:
        args.target_hist = degrade.mean_histogram(data.load_split(args.match_to, "train", masks=False)[0]).tolist()
    return degrade.preprocess(images, kind, np.asarray(args.target_hist) if kind == "hist_match" else None)


def load_datasets(args):
    """Training data (split into train/validation) and whole test slices, as uint8 arrays (§4.3.1).

    --sampling tiles (§4.3.2): train and val are tiles of the grid, val a random val_fraction of them.
    --sampling crops: train holds whole slices (data.CropDataset cuts fresh windows from them) and val
    the grid tiles of a random val_fraction of the slices, so no validation pixel is ever trained on.
    """
    need_masks = not args.pretext
    fraction = getattr(args, "val_fraction", 0.1)  # checkpoints older than the flag: the thesis's 10%
    if args.data:
        train_x, train_y = data.load_split(args.data, "train", masks=need_masks)
        test_x, test_y = data.load_split(args.data, "test", masks=need_masks)
    else:
        train_x, train_y = data.synthetic_em(args.train_images, args.image_side, args.image_side, seed=DEMO_DATA_SEED)
        test_x, test_y = data.synthetic_em(args.test_images, args.image_side, args.image_side,
                                           seed=DEMO_DATA_SEED + 1)
    train_x, test_x = (preprocess(args, images) for images in (train_x, test_x))
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    test = (test_x, test_y if need_masks else None)
    if getattr(args, "sampling", "tiles") == "crops":
        train_idx, val_idx = data.split_validation(len(train_x), fraction, seed=args.seed)  # whole slices
        val_y = data.extract_tiles(train_y[val_idx], args.tile) if need_masks else None
        return {"train": (train_x[train_idx], pick(train_y, train_idx)),
                "val": (data.extract_tiles(train_x[val_idx], args.tile), val_y), "test": test}
    tiles_x = data.extract_tiles(train_x, args.tile)  # (n, T, T) uint8
    tiles_y = data.extract_tiles(train_y, args.tile) if need_masks else None
    train_idx, val_idx = data.split_validation(len(tiles_x), fraction, seed=args.seed)
    return {"train": (tiles_x[train_idx], pick(tiles_y, train_idx)), "val": (tiles_x[val_idx], pick(tiles_y, val_idx)),
            "test": test}


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
        bce = F.binary_cross_entropy_with_logits(seg, y.clamp(min=0), reduction="none").mean(dim=(1, 2, 3))  # (B,)
        return alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).mean()
    if pretext:
        return F.mse_loss(torch.sigmoid(output), y)
    bce = F.binary_cross_entropy_with_logits(output, y)
    return bce + dice_loss(output, y) if loss == "bce_dice" else bce


def train_one_epoch(model, loader, optimizer, scheduler, args, device, epoch):
    """One pass over `loader`; returns the mean training loss. Under torchrun `model` is the DDP
    wrapper and the losses (bar, NaN check, mean) are those of all processes together."""
    from tqdm import tqdm

    rank, world_size = distributed.world()
    model.train()
    total, count = torch.zeros((), device=device), 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, file=sys.stderr,
               disable=rank > 0 or (not sys.stderr.isatty() and not args.progress))
    for x, y in bar:
        # (B, 1, T, T); one channel is already channels-last, so --channels-last needs only the model's weights
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with evaluate.autocast(args.amp, device):
            loss = compute_loss(model(x), x, y, loss=args.loss, pretext=bool(args.pretext), alpha=args.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach() * len(x)
        count += len(x)
        value = loss.item()  # the one host-device sync per step, for the bar and the NaN check
        if world_size > 1:  # the mean of the equal shares: every process stops on a NaN together
            value = distributed.all_sum(value)[0] / world_size
        if not math.isfinite(value):
            raise NonFiniteLoss(f"the training loss became {value} at epoch {epoch + 1}")
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{scheduler.lr:.2e}")
    if world_size > 1:
        distributed.share_buffers(model)  # rank 0's BatchNorm statistics everywhere, for validation
        total_sum, count = distributed.all_sum(float(total), count)
        return total_sum / max(count, 1)
    return float(total) / max(count, 1)


@torch.no_grad()
def validate(model, loader, args, device, shared=False):
    """Mean validation loss and, for segmentation, IoU_F pooled over the validation tiles.

    shared: `loader` holds this process's share of the tiles (torchrun); the sums cover all shares."""
    model.eval()
    loss_sum, count, tp, fp, fn = 0.0, 0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # (B, 1, T, T)
        with evaluate.autocast(args.amp, device):
            out = model(x)
            loss_sum += float(compute_loss(out, x, y, loss=args.loss, pretext=bool(args.pretext), alpha=args.alpha)) * len(x)
        count += len(x)
        if not args.pretext:
            seg = out[0] if isinstance(out, tuple) else out
            pred, mask = (seg.float() > 0).cpu().numpy(), y.cpu().numpy() > 0.5  # logit > 0 <=> prob > 0.5
            a, b, c = evaluate.confusion(pred, mask)
            tp, fp, fn = tp + a, fp + b, fn + c
    if shared:
        loss_sum, count, tp, fp, fn = distributed.all_sum(loss_sum, count, tp, fp, fn)
    if count == 0:  # no validation set (--val-fraction 0)
        return math.nan, math.nan
    iou = float("nan") if args.pretext else evaluate.iou_from_counts(tp, fp, fn)
    return loss_sum / count, iou


# ----------------------------------------------------------------------------------------------
# What a run keeps: checkpoints (atomic, models.py), log.csv, curves.png, prediction overlays, results.json.

def model_config(args):
    return {"arch": args.arch, "size": args.size, "filters": args.filters, "model_kwargs": model_kwargs(args)}


def evaluate_run(model, args, datasets, device):
    """Test-set numbers (§4.2): IoU_F and Dice for segmentation, MSE of restored tiles for a pretext."""
    test_x, test_y = datasets["test"]
    if args.pretext:
        tiles = data.extract_tiles(test_x, args.tile)
        ds = data.TileDataset(tiles, None, augment=False, seed=args.seed, degrade=degrade.random_degradation(args.pretext))
        loss, _ = validate(model, torch.utils.data.DataLoader(ds, batch_size=args.batch_size), args, device)
        return {"test_mse": loss}, None
    probs = evaluate.predict_slices(model, test_x, device, amp=args.amp)
    return evaluate.evaluate_stack(probs, test_y), probs


def clock(seconds):
    """Seconds as m:ss (h:mm:ss from an hour on), for elapsed times and ETAs."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def finite_or_none(value):
    """JSON has no NaN or infinity: write null instead."""
    return value if value is None or math.isfinite(value) else None


def fit(model, train_ds, val_ds, args, device, out, label=""):
    """The training loop (§4.3.2): epochs of `train_one_epoch`, validation loss after each, the schedule,
    early stopping with `args.patience` restoring the best weights, best.pt and last.pt (with optimiser,
    schedule and random state, so `args.resume` continues the same curve), log.csv and curves.png in `out`.

    Only parameters with requires_grad are optimised (adapt.py freezes the encoder this way). Returns
    the run's state (epochs run, best epoch and validation loss, history); under torchrun the other
    ranks return None after the last epoch. `label` prefixes the log lines (adapt.py's stage names).
    """
    rank, world_size = distributed.world()
    run_start = time.perf_counter()
    val_loader = torch.utils.data.DataLoader(distributed.shard(val_ds), batch_size=args.batch_size, num_workers=args.workers)
    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / world_size) / (args.batch_size // world_size))
    trainable = [p for p in model.parameters() if p.requires_grad]  # adapt.py freezes the encoder
    optimizer = schedules.make_optimizer(args.optimizer, trainable, args.lr, args.weight_decay)
    scheduler = schedules.Scheduler(optimizer, args.scheduler, args.lr, args.epochs * steps_per_epoch)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "history": [], "train_seconds": 0.0,
             "stopped": False}
    last_path, best_path = os.path.join(out, "last.pt"), os.path.join(out, "best.pt")

    if args.resume:
        ckpt = models.load_checkpoint(last_path, "--resume")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"])
        if ckpt.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        print(f"resuming {out} after epoch {state['epoch']}")
    else:
        state["val_loss_before"] = validate(model, val_loader, args, device, shared=True)[0]

    def checkpoint(path, with_training_state):
        if rank > 0:
            return
        obj = {"config": model_config(args), "args": vars(args), "model": model.state_dict(), "state": state}
        if with_training_state:
            obj.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=torch.get_rng_state(),
                       cuda_rng=torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
        models.save_atomic(obj, path)

    if not os.path.exists(last_path):
        checkpoint(last_path, True)
    name = label or f"{args.arch} {args.size if models.ARCHS[args.arch]['sized'] else ''} F={args.filters}"
    print(f"{name}: {evaluate.count_parameters(model)[0]:,} parameters; {len(train_ds)} training / {len(val_ds)} "
          f"validation tiles of {args.tile}px on {device}")
    log_path = os.path.join(out, "log.csv")
    net = distributed.training_module(model, device, compile=getattr(args, "compile", False))
    if rank > 0:  # dropout masks of its own, drawn from (seed, epoch, rank)
        torch.manual_seed(int(np.random.SeedSequence([args.seed, state["epoch"], rank]).generate_state(1)[0]))
    first_epoch, loop_start = state["epoch"], time.perf_counter()
    try:
        for epoch in range(state["epoch"], 0 if state["stopped"] else args.epochs):
            start = time.perf_counter()
            train_ds.set_epoch(epoch)
            loader = distributed.train_loader(train_ds, args.batch_size, args.seed, epoch, args.workers,
                                                pin_memory=device.type == "cuda")
            train_loss = train_one_epoch(net, loader, optimizer, scheduler, args, device, epoch)
            val_loss, val_iou = validate(model, val_loader, args, device, shared=True)
            scheduler.epoch_end(val_loss)
            seconds = time.perf_counter() - start
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_iou_f": val_iou,
                   "lr": scheduler.lr, "seconds": seconds}
            state["history"].append(row)
            state["epoch"], state["train_seconds"] = epoch + 1, state["train_seconds"] + seconds
            if val_loss < state["best_val"] or len(val_ds) == 0:  # no validation: keep the final weights
                state["best_val"], state["best_epoch"] = val_loss, epoch + 1
                checkpoint(best_path, False)
            # Early stopping (§4.3.2): patience epochs with no better validation loss.
            state["stopped"] = epoch + 1 - state["best_epoch"] >= args.patience
            checkpoint(last_path, True)
            if rank == 0:
                with open(log_path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                    writer.writerows(state["history"])
            now = time.perf_counter()  # the ETA assumes the epochs still to run cost what this session's did
            eta = (args.epochs - epoch - 1) * (now - loop_start) / (epoch + 1 - first_epoch)
            print(f"{label + '  ' if label else ''}epoch {epoch + 1:3d}/{args.epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                  + ("" if args.pretext else f"val IoU_F {val_iou:.3f}  ")
                  + f"{seconds:.1f}s  elapsed {clock(now - run_start)}  ETA {clock(eta)}", flush=True)
            if state["stopped"]:
                print(f"early stopping: no better validation loss for {args.patience} epochs")
                break
    except KeyboardInterrupt:
        # last.pt is written at the end of every epoch: it holds the last finished one, the state a
        # resumed run must start from to continue the same curve (a half epoch cannot be resumed).
        print(f"\ninterrupted: {last_path} holds epoch {state['epoch']}; continue with "
              f"python train.py --out {args.out_root} --resume", file=sys.stderr)
        raise
    except NonFiniteLoss as exc:
        raise RunError(f"{exc}; training stopped and {last_path} keeps epoch {state['epoch']}; "
                       "try a lower --lr") from None
    if rank > 0:  # evaluation, pictures and results are rank 0's
        return None
    if not os.path.exists(best_path):  # no epoch ran (e.g. --epochs 0): the starting weights are the best
        checkpoint(best_path, False)
    # Early stopping restores the best weights (§4.3.2) before the test evaluation.
    model.load_state_dict(models.load_checkpoint(best_path, "best.pt", keys=("model",))["model"])
    evaluate.draw_curves(state["history"] or [{"epoch": 0, "train_loss": math.nan, "val_loss": math.nan,
                                      "val_iou_f": math.nan}], os.path.join(out, "curves.png"), args.pretext)
    return state


def train_run(args, device, out):
    """One training run (one seed) into the folder `out`; returns its results dict.

    `args.resume`: continue from out/last.pt, which holds the model, optimiser, schedule, history
    and random state of the last finished epoch, so the curve goes on as if never interrupted.
    Under torchrun every process trains its share of each batch and rank 0 alone writes and evaluates
    (the others return None).
    """
    torch.manual_seed(args.seed)  # weights and dropout; data order and augmentation have their own seeds
    datasets = load_datasets(args)
    try:
        model = models.build_model(args.arch, args.size, args.filters, **model_kwargs(args)).to(device)
    except ValueError as exc:  # e.g. a dropout list of the wrong length
        raise RunError(f"model settings: {exc}") from None
    models.set_bn_momentum(model, args.bn_momentum)  # Keras's 0.99 needs hundreds of steps; the demo has few
    if getattr(args, "channels_last", False):  # NHWC weights: the layout the fast convolution kernels prefer
        model = model.to(memory_format=torch.channels_last)
    params, params_keras = evaluate.count_parameters(model)
    degrade_fn = degrade.random_degradation(args.pretext) if args.pretext else None
    crops, rotation = getattr(args, "sampling", "tiles") == "crops", getattr(args, "rotation", "any")
    source = data.CropDataset if crops else data.TileDataset  # crops: a fresh window per (seed, epoch, index)
    train_ds = source(*datasets["train"], **({"tile": args.tile} if crops else {}), augment=args.augment,
                      seed=args.seed, degrade=degrade_fn, rotation=rotation)
    val_ds = data.TileDataset(*datasets["val"], augment=False, seed=args.seed + 10_000, degrade=degrade_fn)
    if len(val_ds) == 0 and getattr(args, "val_fraction", 0.1) > 0:
        unit = "slice" if crops else f"tile(s) of {args.tile}px"
        raise RunError(f"{args.data or 'the demo data'} gives {len(datasets['train'][0])} training {unit}; at least 2 "
                       "are needed (some go to validation): add slices, use a smaller --tile or --val-fraction 0")
    if not args.resume and args.init_checkpoint:
        loaded, fresh = models.load_matching(model, args.init_checkpoint)
        print(f"--init {args.init_checkpoint}: loaded {len(loaded)} tensors ({models.module_names(loaded)})"
              + (f"; kept as initialised: {', '.join(fresh)}" if fresh else "; every tensor matched"))
    state = fit(model, train_ds, val_ds, args, device, out)
    if state is None:  # another rank under torchrun: evaluation, pictures and results are rank 0's
        return None
    metrics, probs = evaluate_run(model, args, datasets, device)
    if probs is not None:
        for i in range(min(3, len(probs))):
            evaluate.save_overlay(datasets["test"][0][i], probs[i], datasets["test"][1][i], os.path.join(out, f"pred_{i}.png"))
    results = {"arch": args.arch, "size": args.size if models.ARCHS[args.arch]["sized"] else None, "filters": args.filters,
               "params": params, "params_with_bn_statistics": params_keras,
               "thesis_params_millions": evaluate.THESIS_PARAMS.get(models.thesis_key(args.arch, args.size, args.filters)),
               "task": "pretext" if args.pretext else "segmentation", "epochs_run": state["epoch"],
               "best_epoch": state["best_epoch"], "train_seconds": round(state["train_seconds"], 2),
               "val_loss_before": finite_or_none(state.get("val_loss_before")),
               "best_val_loss": finite_or_none(state["best_val"]), **metrics,
               **inference_numbers(model, args, device), "device": str(device), "args": vars(args)}
    models.save_atomic(results, os.path.join(out, "results.json"))
    return results


def inference_numbers(model, args, device):
    """Inference time per patch: 256x256 as Tables 5.2/5.4 (a transformer: its own input side)."""
    side = args.tile if models.ARCHS[args.arch]["sized"] else 256
    mean, std = evaluate.time_inference(model, device, side=side, amp=args.amp)
    return {"inference_ms_per_patch": mean, "inference_ms_std": std, "inference_patch": side}


# ----------------------------------------------------------------------------------------------
# Command line.

def positive(kind, minimum=1):
    def convert(text):
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    return convert


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train and evaluate U-Net / UNETR-2D / YNETR-2D for mitochondria "
                                "segmentation (thesis §4.3). Without --data: a demo on built-in synthetic EM data.")
    p.add_argument("--arch", choices=list(models.ARCHS), default="unetr2d", help="network (Tables 5.1-5.4, App. A)")
    p.add_argument("--size", choices=["mini", "small", "base"], default="mini", help="transformer size (Table 5.3)")
    p.add_argument("--filters", type=int, help="initial filters F (default: 16 U-Net family, 32 others; Table 5.2)")
    p.add_argument("--data", help="folder with train/x, train/y, test/x, test/y (Lucchi++ / Kasthuri++ layout)")
    p.add_argument("--out", help="output folder (default runs/<arch>-<size>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--eval-only", metavar="CHECKPOINT", help="evaluate a best.pt/last.pt on the test split and exit")
    p.add_argument("--summary", action="store_true", help="print the parameter count beside the thesis's and exit")
    g = p.add_argument_group("training (defaults: §4.3.2 with --data, the demo preset without)")
    g.add_argument("--epochs", type=positive(int, 0))
    g.add_argument("--patience", type=positive(int), help="early-stopping patience on validation loss")
    g.add_argument("--batch-size", type=positive(int))
    g.add_argument("--lr", type=positive(float, 0.0))
    g.add_argument("--weight-decay", type=positive(float, 0.0))
    g.add_argument("--tile", type=positive(int, 16), help="training tile and transformer input side (256 in the thesis)")
    g.add_argument("--bn-momentum", type=float, help="BatchNorm running-average update (torch convention); "
                   "0.01 = Keras's 0.99 of the thesis code")
    g.add_argument("--loss", choices=["bce", "bce_dice"], default="bce", help="App. B")
    g.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw", help="App. B")
    g.add_argument("--scheduler", choices=["cosine", "onecycle", "plateau", "none"], default="cosine", help="App. B")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no rotations/flips (Table 5.1 row 1)")
    g.add_argument("--rotation", choices=data.ROTATIONS, help="DA rotation: any = angle uniform in [-180, 180], "
                   "bilinear (§4.3.2, default); any-nearest = the same angles, nearest-neighbour image; right = "
                   "multiples of 90 degrees, an exact permutation of the pixels")
    g.add_argument("--sampling", choices=["tiles", "crops"], help="training samples: tiles = the fixed grid of "
                   "§4.3.1 (default); crops = a fresh random window of the padded slices per sample and epoch")
    g.add_argument("--val-fraction", type=float, help="share of the training tiles (with crops: of the slices) "
                   "held out for validation and early stopping (0.1, §4.3.2); 0 = none, the final weights are kept")
    g.add_argument("--alpha", type=float, default=0.5, help="Attention Y-Net weight of the MSE term (App. A Eq. 1)")
    g.add_argument("--preprocess", choices=degrade.PREPROCESSING, default="none", help="App. A baselines, applied to "
                   "every image the model sees (training, evaluation, predict.py): CLAHE, or histogram matching")
    g.add_argument("--match-to", metavar="DIR", help="--preprocess hist_match: the target data set whose train/x "
                   "images give the mean histogram (App. A); its masks are never read")
    g.add_argument("--pretext", help="self-supervised denoising with these degradations, comma separated "
                   f"(§3.3): {', '.join(degrade.DEGRADATIONS)}")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--repeats", type=positive(int), default=1, help="runs with seeds seed..seed+N-1; mean ± std (§5)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU: fast on those with bf16 units)")
    g.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels-last (NHWC) weights, faster convolutions (default: on in the demo, off with --data)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model (GPU; compiles first)")
    g.add_argument("--workers", type=positive(int, 0), help="DataLoader worker processes (default 0 on CPU, 4 on GPU)")
    g.add_argument("--threads", type=positive(int), help="CPU threads for torch's operators (default: 1 in the demo, "
                   "whose tensors are too small to share; torch's own choice, one per core, with --data)")
    g.add_argument("--progress", action="store_true", help="show the per-epoch bar even when not on a terminal")
    m = p.add_argument_group("model knobs (default: the thesis's best for the arch, Table 5.1 / App. B)")
    m.add_argument("--batch-norm", dest="batch_norm", action="store_true", default=None)
    m.add_argument("--no-batch-norm", dest="batch_norm", action="store_false")
    m.add_argument("--dropout", type=float, nargs="+", help="one rate, or one per level incl. bottleneck")
    m.add_argument("--activation", choices=["relu", "elu", "gelu"])
    m.add_argument("--init", help="glorot_uniform | he_normal, or a checkpoint to start from (§3.3)")
    m.add_argument("--attention-gates", action="store_true", default=None, help="U-Net only (Table 5.1 last row)")
    m.add_argument("--fused-attention", action="store_true", default=None, help="UNETR-2D/YNETR-2D: Eq. 2.1 as "
                   "torch's fused kernel instead of the written-out one (same outputs to rounding)")
    m.add_argument("--train-images", type=positive(int), help=argparse.SUPPRESS)
    m.add_argument("--test-images", type=positive(int), help=argparse.SUPPRESS)
    m.add_argument("--image-side", type=positive(int, 16), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    demo = not (args.data or args.summary or args.eval_only)  # the demo preset trains only
    preset = {**DEMO, "epochs": DEMO_EPOCHS[args.arch]} if demo else PROTOCOL
    if args.patience is None and demo:
        args.patience = args.epochs or preset["epochs"]  # the demo is too short to stop early
    if args.batch_norm is None and demo and args.arch in DEMO_BATCH_NORM:
        args.batch_norm = True
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in THESIS_DATA.items():  # what a preset leaves open is the thesis's pipeline
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.filters = models.ARCHS[args.arch]["filters"] if args.filters is None else args.filters
    args.channels_last = bool(args.channels_last)
    args.pretext = [n.strip() for n in args.pretext.split(",")] if args.pretext else None
    args.init_checkpoint = None
    if args.init and args.init not in ("glorot_uniform", "he_normal"):
        if not os.path.isfile(args.init):
            raise RunError(f"--init {args.init}: no such checkpoint file, and not glorot_uniform or he_normal")
        args.init_checkpoint = args.init
    if args.pretext:
        unknown = [n for n in args.pretext if n not in degrade.DEGRADATIONS]
        if unknown:
            raise RunError(f"--pretext: unknown degradation {', '.join(unknown)}; "
                           f"choose from {', '.join(degrade.DEGRADATIONS)}")
    if args.tile % 16:
        raise RunError(f"--tile {args.tile}: must be a multiple of 16 (the patch size, §2.2.5)")
    if (args.preprocess == "hist_match") != bool(args.match_to):
        raise RunError("--preprocess hist_match and --match-to DIR go together: name the target data set whose "
                       "histogram the source images are matched to")
    args.target_hist = None  # filled from --match-to's images when the data are loaded, then kept in checkpoints
    if not 0 <= args.val_fraction < 1:
        raise RunError(f"--val-fraction {args.val_fraction}: must be at least 0 and below 1 (0.1 in the thesis)")
    if args.val_fraction == 0 and args.scheduler == "plateau":
        raise RunError("--val-fraction 0 leaves no validation loss for --scheduler plateau; use cosine, "
                       "onecycle or none, or hold out a validation set")
    return args


def summary(args):
    """Parameter count at the thesis's 256x256 input (the position embedding depends on it)."""
    kw = model_kwargs(args)
    if models.ARCHS[args.arch]["sized"]:
        kw["img_size"] = 256
    model = models.build_model(args.arch, args.size, args.filters, **kw)
    params, keras = evaluate.count_parameters(model)
    thesis = evaluate.THESIS_PARAMS.get(models.thesis_key(args.arch, args.size, args.filters))
    name = f"{args.arch}" + (f" {args.size}" if models.ARCHS[args.arch]["sized"] else "") + f" F={args.filters}"
    print(f"{name}: {params:,} trainable parameters ({keras:,} with BatchNorm running statistics)")
    if thesis:
        print(f"thesis: {thesis}M (Tables 5.2/5.4); ours {params / 1e6:.3g}M, {100 * (params / 1e6 / thesis - 1):+.2f}%")
    else:
        print("thesis: no parameter count reported for this configuration")


def check_batch_split(batch_size, world_size):
    if batch_size % world_size:
        raise RunError(f"--batch-size {batch_size} is the whole batch, shared by the {world_size} processes "
                       f"of torchrun: use a multiple of {world_size}")


RESUME_FLAGS = {"--out", "--resume", "--device", "--workers", "--threads", "--progress"}


def prepare_out(args, argv):
    """The run folder. A new run needs a missing or empty folder (nothing a user has is overwritten);
    --resume reloads the run's own arguments from its args.json."""
    out = args.out or os.path.join("runs", f"{args.arch}-{args.size if models.ARCHS[args.arch]['sized'] else 'cnn'}-"
                                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    saved_path = os.path.join(out, "args.json")
    if args.resume:
        if not os.path.isfile(saved_path):
            raise RunError(f"--resume: {saved_path} does not exist; name the folder of an earlier run with --out")
        ignored = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - RESUME_FLAGS)
        if ignored:
            print(f"note: resuming with the run's own arguments; ignored {' '.join(ignored)}", file=sys.stderr)
        with open(saved_path) as f:
            saved = json.load(f)
        return out, argparse.Namespace(**{**saved, "resume": True, "device": args.device, "workers": args.workers,
                                          "threads": args.threads or saved.get("threads"), "progress": args.progress})
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise RunError(f"--out {out} already exists and is not empty; choose a new folder, "
                       "or add --resume to continue the run in it")
    os.makedirs(out, exist_ok=True)
    models.save_atomic(vars(args), saved_path)
    return out, args


def eval_only(args, device):
    """Re-evaluate a checkpoint on its run's test split, or on `--data` (App. A, Table 1)."""
    ckpt = models.load_checkpoint(args.eval_only, "--eval-only")
    model = models.rebuild(ckpt, f"--eval-only {args.eval_only}").to(device)
    out = prepare_out(argparse.Namespace(**{**vars(args), "resume": False}), [])[0] if args.out else None
    saved = argparse.Namespace(**ckpt["args"])
    saved.data = args.data or saved.data
    if args.threads or getattr(saved, "threads", None):  # the run's threads: its evaluation's rounding exactly
        torch.set_num_threads(args.threads or saved.threads)  # (run_command restores the caller's)
    saved.amp = args.amp
    datasets = load_datasets(saved)
    metrics, _ = evaluate_run(model, saved, datasets, device)
    params, params_keras = evaluate.count_parameters(model)
    metrics.update(params=params, params_with_bn_statistics=params_keras, checkpoint=args.eval_only,
                   data=saved.data, device=str(device), **inference_numbers(model, saved, device))
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_slice"}, indent=2))
    if out:
        models.save_atomic(metrics, os.path.join(out, "eval.json"))
    return metrics


def cli(run, argv=None):
    """A program's entry point: run(argv). A mistake in the user's input (RunError, data.DataError,
    models.CheckpointError) becomes one line on stderr and exit code 2, Ctrl-C exit code 130; neither
    prints a traceback.
    train.py, predict.py, adapt.py and reproduce.py all start here."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except (data.DataError, models.CheckpointError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def main(argv=None):
    return cli(run_command, argv)


def run_command(argv):
    started, threads = time.perf_counter(), torch.get_num_threads()
    try:
        args = parse_args(argv)
        if args.summary:
            return summary(args)
        device = pick_device(args.device)
        if args.workers is None:
            args.workers = 4 if device.type == "cuda" else 0
        if args.eval_only:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise RunError("--eval-only evaluates in one process: start it with python, not torchrun")
            return eval_only(args, device)
        if device.type == "mps" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RunError("torchrun: Apple's MPS backend has no torch.distributed support; use --device cpu")
        device = distributed.join_torchrun(device)
        rank, world_size = distributed.world()
        if not args.resume:  # refused before the run folder exists; a resumed run's batch once it is read
            check_batch_split(args.batch_size, world_size)
        out, args = distributed.from_rank0(prepare_out, args, argv)
        check_batch_split(args.batch_size, world_size)
        args.out_root = out
        if args.threads:  # README "Threads": the demo's small tensors run fastest on one thread
            torch.set_num_threads(args.threads)
        mode = f"--data {args.data}: thesis protocol" if args.data else "demo on built-in synthetic EM data"
        print(f"device: {device} ({'picked automatically' if args.device == 'auto' else 'as asked'}); {mode}")
        if world_size > 1:
            print(f"torchrun: {world_size} processes ({distributed.backend()}), each trains {args.batch_size // world_size} "
                  f"of every batch of {args.batch_size}; rank 0 logs, saves and evaluates")
        if not args.data:
            print(f"demo preset: {args.train_images} train / {args.test_images} test synthetic images of "
                  f"{args.image_side}px, F={args.filters}, tiles {args.tile}, {args.epochs} epochs, batch "
                  f"{args.batch_size}, lr {args.lr}, BatchNorm momentum {args.bn_momentum}"
                  + (" (BatchNorm on)" if args.batch_norm and args.arch in DEMO_BATCH_NORM else "")
                  + (", channels-last" if args.channels_last else "")
                  + (f", {args.threads} CPU thread{'s' if args.threads > 1 else ''}" if args.threads and device.type == "cpu" else "")
                  + " (the thesis protocol runs with --data DIR)")
        runs = []
        for k in range(args.repeats):
            run_out = out if args.repeats == 1 else os.path.join(out, f"seed-{k}")
            run_args = argparse.Namespace(**{**vars(args), "seed": args.seed + k, "repeats": 1})
            if args.resume and os.path.isfile(os.path.join(run_out, "results.json")):
                with open(os.path.join(run_out, "results.json")) as f:
                    runs.append(json.load(f))  # finished before the interruption
                continue
            run_args.resume = args.resume and os.path.isfile(os.path.join(run_out, "last.pt"))
            os.makedirs(run_out, exist_ok=True)
            runs.append(train_run(run_args, device, run_out))
        if rank > 0:
            return None
        report(args, runs, out)
        print(f"total wall time {clock(time.perf_counter() - started)}")
        return runs[0] if args.repeats == 1 else runs
    finally:
        torch.set_num_threads(threads)  # as it was for a caller in this process (reproduce.py, tests)
        distributed.leave()


def report(args, runs, out):
    """Final lines: test numbers (mean ± std over repetitions, as §5), the thesis's beside them."""
    key = "test_mse" if args.pretext else "test_iou_f"
    values = np.array([r[key] for r in runs])
    line = f"test {key[5:]}: {values.mean():.4f}" + (f" ± {values.std():.4f} over {len(runs)} runs" if len(runs) > 1 else "")
    if not args.pretext:
        line += (f"   (pooled IoU_F {np.mean([r['test_iou_f_global'] for r in runs]):.4f}, "
                 f"Dice {np.mean([r['test_dice'] for r in runs]):.4f})")
    print(line)
    name = os.path.basename(os.path.normpath(args.data or "")).lower()
    for dataset, table in evaluate.THESIS_IOU.items():
        thesis = table.get((args.arch, args.size if models.ARCHS[args.arch]["sized"] else None))
        if dataset in name and thesis and not args.pretext:
            print(f"thesis (Table 5.4, {dataset}): IoU_F {thesis}")
    print(f"inference {runs[0]['inference_ms_per_patch']:.2f} ± {runs[0]['inference_ms_std']:.2f} ms per "
          f"{runs[0]['inference_patch']}x{runs[0]['inference_patch']} patch on {runs[0]['device']}; outputs in {out}")
    if len(runs) > 1:
        models.save_atomic({key: values.tolist(), "mean": float(values.mean()), "std": float(values.std()),
                     "args": vars(args)}, os.path.join(out, "summary.json"))
    if not args.data:
        print("real data: python train.py --data DIR  (DIR/train/x, train/y, test/x, test/y; Lucchi++ / Kasthuri++)")


if __name__ == "__main__":
    main()
