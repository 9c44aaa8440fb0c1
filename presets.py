"""Every setting of a training run in one place: the thesis's protocol, the lighter presets, and the
frozen configs that a run is made of.

Thesis: §4.3.1-4.3.2 (data processing and training setup), App. B Table 2 (the best assignment of the
hyperparameter search), Tables 5.1-5.4 (each network's best settings), App. A "Multi-task neural
networks" (the domain-adaptation run).

A preset is a whole dict of settings. `THESIS` is the protocol and the only place a default is written,
a comment per value citing where the thesis states it (or saying that the thesis has no such setting);
each other preset is `{**THESIS, ...}` naming only what it changes, each change with its one-line reason.
`make_config` turns a preset and the settings asked for into one frozen `RunConfig` (holding the loop's
`FitConfig`), refusing settings that do not fit together before anything is read or written. It reads
no files: what the data decide (App. A's target histogram, a 16-bit data set's intensity map) is filled
in where the data are loaded (train.load_slices). train.py runs `THESIS` with `--data` and `DEMO`
without (`--preset` picks any); reproduce.py's `--quick` tables run `QUICK`; Table A.1 on the built-in
domains runs `LIGHT` and `ADAPT_LIGHT`. The measurements behind the lighter presets: docs/speed.md and
docs/domain-adaptation.md.
"""
from dataclasses import asdict, dataclass, fields

import torch

import cli
import data
import degrade
import models


# The model knobs among the settings (each arch takes those of models.ARCHS[arch]["knobs"]).
KNOBS = ("batch_norm", "dropout", "vit_dropout", "activation", "init", "attention_gates", "fused_attention")


@dataclass(frozen=True)
class FitConfig:
    """The loop's settings (train.fit; §4.3.2, App. B). Defaults: THESIS."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str             # adamw | adam | sgd
    scheduler: str             # cosine | onecycle | plateau | none
    patience: int              # early stopping on the validation loss; None: never
    loss: str                  # bce | bce_dice
    alpha: float               # App. A Eq. 1: weight of the Attention Y-Net's reconstruction term
    pretext: bool              # a denoising pretext (§3.3): MSE loss, no IoU
    seed: int                  # the data order of every epoch is drawn from (seed, epoch)
    amp: bool                  # bf16 autocast
    compile: bool              # torch.compile the training module
    workers: int               # DataLoader worker processes
    progress: bool             # the per-epoch bar even off a terminal


@dataclass(frozen=True)
class RunConfig:
    """One training run: the network, its data and the loop. Kept as run.json and in every checkpoint,
    so that --resume and predict.py rebuild the run from its folder alone. Defaults: THESIS."""
    arch: str
    size: str                  # Table 5.3, for UNETR-2D / YNETR-2D
    filters: int               # F
    fit: FitConfig
    data: str                  # a data-set folder; None: the built-in synthetic set (synthetic.py)
    tile: int                  # training tile and transformer input side (§4.3.1)
    augment: bool              # §4.3.2 rotations and flips
    rotation: str              # data.ROTATIONS
    sampling: str              # tiles: the fixed grid (§4.3.1); crops: a fresh window per sample and epoch
    val_fraction: float        # §4.3.2
    preprocess: str            # App. A baselines: clahe | hist_match (to match_to's mean histogram)
    match_to: str
    target_hist: tuple         # that histogram, 256 floats, so prediction matches new slices the same way
    intensity: tuple           # (low, high) raw values mapped onto 0..255 for 16-bit data, or None
    pretext: tuple             # degradation names of a denoising pretext (§3.3)
    init_from: str             # a checkpoint whose matching tensors start the run (§3.3)
    batch_norm: bool           # model knobs (None: the arch's thesis best, Table 5.1 / App. B)
    dropout: object            # one rate, or one per level incl. the bottleneck
    vit_dropout: float         # the ViT's attention and MLP dropout (UNETR-2D, YNETR-2D)
    activation: str
    init: str                  # glorot_uniform | he_normal
    attention_gates: bool
    fused_attention: bool
    bn_momentum: float         # torch convention: 0.01 is the thesis code's Keras 0.99
    channels_last: bool
    threads: int               # CPU threads for torch's operators
    train_images: int          # the synthetic set (without --data)
    test_images: int
    image_side: int
    repeats: int               # seeds seed .. seed + repeats - 1
    steps: int                 # a budget of optimiser steps: the whole epochs nearest it (None: fit.epochs)
    preset: str

    @property
    def model_kwargs(self):
        return models.model_kwargs(self.arch, self.tile, **{k: getattr(self, k) for k in KNOBS})

    @property
    def table_size(self):
        """The size as the thesis's tables name it: a transformer's (Table 5.3), None for a CNN."""
        return self.size if models.ARCHS[self.arch]["sized"] else None

    @property
    def network(self):
        """What a checkpoint records about the network (models.network_config)."""
        return models.network_config(self.arch, self.size, self.filters, self.model_kwargs)

    @property
    def checkpoint_meta(self):
        """What every checkpoint of the run carries besides its tensors: the network and the settings."""
        return {"config": self.network, "run": asdict(self)}

    @classmethod
    def from_dict(cls, saved):
        """The RunConfig of a run.json or a checkpoint's "run" (JSON gives lists where tuples were); a
        setting the file predates takes THESIS's value."""
        tuples = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # noqa: E731
        run, fit = tuples({**THESIS, **saved}), {**THESIS, **saved.get("fit", {})}
        fit = FitConfig(**{**{f.name: fit[f.name] for f in fields(FitConfig)},
                           "pretext": bool(fit["pretext"])})
        return cls(**{**{f.name: run[f.name] for f in fields(cls) if f.name != "fit"}, "fit": fit})


THESIS = {
    "arch": "unetr2d",        # §3.1: the thesis's network
    "size": "mini",           # Table 5.4: Mini, the best UNETR-2D on Lucchi++ (0.861)
    "filters": None,          # the arch's own (models.ARCHS): 16 for the U-Net family [34], 32 UNETR/YNETR
    "tile": 256,              # §4.3.1: 256x256 patches; also the transformers' input side
    "epochs": 360,            # §4.3.2, App. B Table 2
    "steps": None,            # §4.3.2 counts epochs; a number: the whole epochs nearest that many steps
    "patience": 60,           # §4.3.2: early stopping on the validation loss, best weights restored
    "batch_size": 6,          # §4.3.2
    "lr": 1e-4,               # §4.3.2
    "weight_decay": 1e-5,     # §4.3.2: AdamW's decoupled weight decay [57]
    "optimizer": "adamw",     # §4.3.2
    "scheduler": "cosine",    # §4.3.2: cosine decay [69], per step
    "loss": "bce",            # §4.3.2: binary cross-entropy
    "alpha": 0.5,             # App. A Eq. 1: the Attention Y-Net's weight of the reconstruction MSE
    "augment": True,          # §4.3.2: on-the-fly rotations and flips, the DA of [34]
    "rotation": "any",        # App. B Table 2: rotation_range(180), any angle, bilinear
    "sampling": "tiles",      # §4.3.1: the fixed grid of non-overlapping patches
    "val_fraction": 0.1,      # §4.3.2: 10% of the training patches, chosen at random
    "bn_momentum": 0.01,      # the thesis code's Keras BatchNorm (0.99 running average, torch's 0.01)
    "batch_norm": None,       # the arch's best (Table 5.1 / App. B): on for UNETR/YNETR, off for the U-Nets
    "dropout": None,          # the arch's best (Table 5.1): the U-Nets' 0.1-0.3 per level, none in UNETR-2D
    "vit_dropout": None,      # the arch's own: 0.1 in the ViT's attention and MLP, as the thesis code
    "activation": None,       # the arch's best (Table 5.1): ELU for the U-Nets, ReLU for UNETR/YNETR
    "init": None,             # the arch's best (Table 5.1): He normal
    "attention_gates": None,  # the arch's own: only the Attention U-Net has them (Table 5.1, last row)
    "fused_attention": None,  # off: Eq. 2.1 written out (attention.py); torch's fused kernel when on
    "preprocess": "none",     # App. A's baselines (clahe, hist_match) are not the protocol
    "match_to": None,         # App. A: the target data set of hist_match
    "target_hist": None,      # App. A: its mean histogram, computed where the data are loaded
    "intensity": None,        # §4.3.1 divides by 255; a 16-bit data set's map is found where it is loaded
    "pretext": (),            # §3.3: no pretext; a denoising pre-training names its degradations
    "init_from": None,        # §3.3: from scratch; fine-tuning names the pre-trained checkpoint
    "data": None,             # no folder: the built-in synthetic set (not the thesis's)
    "repeats": 1,             # §5 reports 10 runs; reproduce.py runs them
    "seed": 0,                # not in the thesis: weights, data order, split and augmentation follow it
    # How the machine runs it, not what is computed (the thesis used one RTX 3090).
    "channels_last": False,   # memory layout only; the thesis code's Keras default is NHWC anyway
    "threads": None,          # torch's own choice: one per core
    "amp": False,             # float32, as the thesis code
    "compile": False,         # eager PyTorch
    "workers": None,          # DataLoader processes: 4 on a GPU, 0 on a CPU (make_config)
    "progress": False,        # the per-epoch bar on a terminal only
    # The built-in synthetic EM set (synthetic.py), on which every run without --data trains; not the
    # thesis's. At the demo's steps more slices do not help: 48 for 22 epochs scored 0.832 and 0.818
    # (seeds 0, 1), 96 for 11 0.809 and 0.820; fewer hurt (24 for 60 epochs: 0.806, against 48 for 30: 0.836).
    "train_images": 48, "test_images": 8, "image_side": 256,
}

# The demo: a UNETR-2D Mini on the built-in synthetic EM set in about 80 seconds on a 2-core CPU.
DEMO = {
    **THESIS,
    "tile": 128,              # a quarter of the pixels per step
    "filters": 8,             # halves a step: convolutions, mostly their backward pass, are ~70% of it
    "epochs": 19,             # 817 steps (UNETR-2D: one-cycle, GELU); each other arch's are in DEMO_ARCH
    "patience": None,         # too short a run to stop early
    "batch_size": 4,
    "lr": 1e-3,               # ten times the thesis's: few steps to learn in
    "loss": "bce_dice",       # the Dice term pulls thin mitochondria up early: +0.035 IoU_F at 18 epochs
    "dropout": 0.0, "vit_dropout": 0.0,  # too short a run to overfit; dropout only slows it: +0.04 at 18
    "bn_momentum": 0.1,       # Keras's 0.99 needs hundreds of steps to settle; torch's default
    "channels_last": True,    # 7-20% faster convolutions on a CPU
    "threads": 1,             # the demo's small tensors run faster on one thread than on two
}
# What each arch's demo changes in DEMO (docs/speed.md). Right angles: a bilinear any-angle rotation
# smooths the training tiles, so a network learns on blurrier images than the sharp test slices, and
# BatchNorm's running statistics are gathered on them too (the Attention U-Net's 14-epoch test IoU_F:
# 0.81; with the same weights' statistics recomputed over unrotated tiles, 0.91). With right angles the
# CNN-heavy archs learn in about half the epochs. UNETR-2D keeps the any-angle draw: at 22 epochs it
# scored 0.832 with it and 0.814 with right angles. Epochs: where seeds 0 and 1 both scored 0.85 or more,
# at least a point clear of it, with the thesis's cosine schedule. UNETR-2D's epochs (DEMO), schedule and
# activation: the best median of seeds 0-7 at the old demo's time or less. One-cycle at 20 epochs with
# ReLU: median 0.823 (cosine at 22: 0.822, at 20 below it). GELU in the convolutional part (App. B
# Table 2's third choice) costs 1.07x a step and learns more per step: median 0.833 at 19 epochs, 0.824
# at 18, and the slowest of the eight seeds ends at 0.75 instead of 0.57. BatchNorm for the
# attention-gated CNNs: without it they predict no mitochondria for their first 10-15 epochs and end a
# short run far behind (`--no-batch-norm`: the thesis's).
DEMO_ARCH = {
    "unetr2d": {"scheduler": "onecycle", "activation": "gelu"},  # both from App. B's search space
    "ynetr2d": {"epochs": 8, "rotation": "right"},
    "unet": {"epochs": 16, "rotation": "right"},
    "attention_unet": {"epochs": 10, "rotation": "right", "batch_norm": True},
    "attention_ynet": {"epochs": 9, "rotation": "right", "batch_norm": True},
}

# reproduce.py --quick: every table in minutes on a CPU. Each row keeps its thesis arch, filters and
# BatchNorm (the demo's BatchNorm for the attention-gated CNNs is not taken over).
QUICK = {
    **DEMO,
    "tile": 32, "image_side": 128, "train_images": 3, "test_images": 2,  # tiny images: seconds per run
    "epochs": 4,
}

# Real data on a CPU (train.py --data DIR --preset cpu): a fixed budget of steps, whatever the data's size,
# that a 2-core CPU trains in 10-25 minutes with the evaluation of a Lucchi++-sized test set (measured: 8-11
# minutes on a fast 2-core Xeon; docs/training.md has the measurements on a real EM stack).
CPU = {
    **THESIS,
    "filters": 16,            # the U-Net family's own; half UNETR's 32 (Table 5.2: F=16 0.846, F=32 0.853)
    "steps": 800,             # not epochs: the same cost on 15 slices or 165
    "patience": None,         # a budget this short is never past its best
    "lr": 1e-3,               # ten times the thesis's: few steps to learn in
    "batch_norm": True,       # without it a short run stays at "all background" (docs/rotation-study.md)
    "bn_momentum": 0.1,       # Keras's 0.99 needs hundreds of steps to settle; torch's default
    "dropout": 0.0, "vit_dropout": 0.0,  # a run this short does not overfit; dropout only slows learning
    "loss": "bce_dice",       # the Dice term pulls thin foreground up early (App. B's other loss)
    "rotation": "right",      # +0.08 IoU_F at 864 steps on a real stack: no bilinear smoothing
    "channels_last": True,    # 7-20% faster convolutions on a CPU
}

# Table A.1's baselines on the built-in domains "a" and "b" (reproduce.py A1 --quick).
LIGHT = {
    **THESIS,
    "tile": 128, "filters": 8,  # as the demo: a CPU budget
    "epochs": 50, "patience": 50,  # no early stopping in so short a run
    "batch_size": 4,
    "lr": 1e-3,
    "batch_norm": True,       # no CNN learns in so few steps without it
    "bn_momentum": 0.1,
    "threads": 1,             # two such runs share a 2-core machine, one direction each
    "train_images": 16, "test_images": 6, "image_side": 256,  # the size of each synthetic domain
}

# The Attention Y-Net of App. A (adapt.py); each stage's optimiser, schedule and epochs are adapt.STAGES.
ADAPT = {
    "crops": 1000,            # App. A: "1000 random cropped patches", 10% for validation
    "tile": 256,              # App. A: 256 x 256
    "filters": 32,            # the reference code's initial filters
    "batch_size": 1,          # App. A: "the optimal batch size was found to be 1"
    "batch_norm": False,      # the reference code's Y-Net has none
    "bn_momentum": 0.01,
    "stage_epochs": None,     # None: adapt.STAGES's 50, 40, 100
    "stage_lr": None,         # None: adapt.STAGES's 1e-3, 2e-4, 2e-4
    "threads": None,          # torch's own choice: one per core
    "seed": 0,
}
ADAPT_LIGHT = {
    **ADAPT,
    "crops": 240, "tile": 128, "filters": 8,  # a CPU budget
    "batch_size": 4, "stage_lr": (1e-3, 1e-3, 1e-3),  # batch 1 at lr 2e-4 never learnt the source in time
    # stage 3 reached a source IoU_F of 0.71-0.78 with it, 0.52 without
    "batch_norm": True, "bn_momentum": 0.1,
    "stage_epochs": (5, 3, 15),
    "threads": 1,             # as LIGHT: two directions share a 2-core machine
}

PRESETS = {"thesis": THESIS, "demo": DEMO, "quick": QUICK, "light": LIGHT, "cpu": CPU}


def for_arch(name, arch):
    """The settings of preset `name` for `arch`: the demo's with that arch's own (DEMO_ARCH) applied."""
    return {**PRESETS[name], **(DEMO_ARCH[arch] if name == "demo" else {})}


def make_config(arch=None, preset=None, device_type="cpu", **given):
    """The RunConfig of a new run: preset `preset` (thesis with `data`, demo without) for `arch`, then
    every setting in `given` (train.py's flag names; None: the preset's), then what depends on the
    machine. Settings that do not fit together are refused (a UsageError naming the flag) up front."""
    preset = preset or ("thesis" if given.get("data") else "demo")
    arch = arch or THESIS["arch"]
    unknown = set(given) - set(THESIS)
    if unknown:
        raise TypeError(f"make_config: no setting called {', '.join(sorted(unknown))}")
    given = {k: v for k, v in given.items() if v is not None}
    s = {**for_arch(preset, arch), **given, "arch": arch, "preset": preset}
    for knob in set(KNOBS) - set(models.ARCHS[arch]["knobs"]) - set(given):
        s[knob] = None  # a preset's knob that this arch has not (the CPU preset's ViT dropout for a U-Net)
    s["filters"] = s["filters"] or models.ARCHS[arch]["filters"]
    if s["workers"] is None:
        s["workers"] = 4 if device_type == "cuda" else 0
    names = s["pretext"]
    s["pretext"] = tuple(n.strip() for n in names.split(",")) if isinstance(names, str) else tuple(names)
    if isinstance(s["dropout"], (list, tuple)):
        s["dropout"] = s["dropout"][0] if len(s["dropout"]) == 1 else tuple(s["dropout"])
    fit = FitConfig(**{**{f.name: s[f.name] for f in fields(FitConfig)}, "pretext": bool(s["pretext"])})
    refuse_conflicts(s, fit)
    run = RunConfig(**{**{f.name: s[f.name] for f in fields(RunConfig) if f.name != "fit"}, "fit": fit})
    # the network built on the meta device (no memory, no time): knobs that do not fit it are refused now
    try:
        with torch.device("meta"):
            models.build_model(run.arch, run.size, run.filters, **run.model_kwargs)
    except ValueError as exc:  # e.g. a dropout list of the wrong length
        raise cli.UsageError(f"model settings: {exc}") from None
    return run


def refuse_conflicts(s, fit):
    """Refuse settings `s` (and the loop's `fit`) that cannot run together, naming the flags."""
    unknown = [n for n in s["pretext"] if n not in degrade.DEGRADATIONS]
    if unknown:
        raise cli.UsageError(f"--pretext: unknown degradation {', '.join(unknown)}; choose from "
                             f"{', '.join(degrade.DEGRADATIONS)}")
    if s["tile"] % 16:
        raise cli.UsageError(f"--tile {s['tile']}: must be a multiple of 16 (the patch size, §2.2.5)")
    if (s["preprocess"] == "hist_match") != bool(s["match_to"]):
        raise cli.UsageError("--preprocess hist_match and --match-to DIR go together: name the target data "
                             "set whose mean histogram the images are matched to")
    if fit.scheduler == "plateau" and s["val_fraction"] == 0:
        raise cli.UsageError("--val-fraction 0 leaves no validation loss for --scheduler plateau; use "
                             "cosine, onecycle or none, or hold out a validation set")


NONE_MEANS = {"filters": "the arch's", "batch_norm": "the arch's", "activation": "the arch's",
              "patience": "off", "threads": "one per core", "steps": "epochs"}


def _shown(key, value):
    if value is None:
        return NONE_MEANS.get(key, "none")
    if type(value) is bool:
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


# What `differences` compares: the protocol's settings, not the run's inputs or the machine's choices
# that every preset leaves alone.
COMPARED = ("tile", "filters", "epochs", "steps", "patience", "batch_size", "lr", "weight_decay", "optimizer",
            "scheduler", "loss", "alpha", "augment", "rotation", "sampling", "val_fraction", "bn_momentum",
            "batch_norm", "activation", "channels_last", "threads", "repeats")


def differences(settings, thesis=THESIS):
    """'tile 128 (thesis 256), ...': where `settings` depart from `thesis` (THESIS, perhaps with the
    arch's own values filled in); "" when nowhere."""
    keys = [k for k in COMPARED if k in settings and settings[k] != thesis[k]]
    return ", ".join(f"{k.replace('_', ' ')} {_shown(k, settings[k])} (thesis {_shown(k, thesis[k])})"
                     for k in keys)


# ----------------------------------------------------------------------------------------------
# train.py's flags for these settings: each sets the setting of its name, None (not given) leaves the
# preset's value (make_config).

def add_setting_flags(p):
    """Every setting's flag, in groups, on the argparse parser `p` (train.py's parse_args)."""
    add = p.add_argument_group("training (§4.3.2, App. B)").add_argument
    add("--epochs", type=cli.at_least(int, 0))
    add("--steps", type=cli.at_least(int), help="a budget of optimiser steps instead: the whole epochs "
        "nearest it, whatever the data's size (the cpu preset's)")
    add("--patience", type=cli.at_least(int), help="early-stopping patience on the validation loss")
    add("--batch-size", type=cli.at_least(int))
    add("--lr", type=cli.at_least(float, 0.0))
    add("--weight-decay", type=cli.at_least(float, 0.0))
    add("--loss", choices=["bce", "bce_dice"])
    add("--optimizer", choices=["adamw", "adam", "sgd"])
    add("--scheduler", choices=["cosine", "onecycle", "plateau", "none"])
    add("--alpha", type=cli.unit_interval, help="Attention Y-Net weight of the MSE term (App. A Eq. 1)")
    add("--pretext", help="denoising pre-training (§3.3), comma separated: "
        f"{', '.join(degrade.DEGRADATIONS)}")
    add("--init-from", metavar="CHECKPOINT", help="start from a checkpoint's matching tensors (§3.3)")
    add("--seed", type=cli.at_least(int, 0))
    add("--repeats", type=cli.at_least(int), help="runs with seeds seed..seed+N-1; mean ± std (§5)")
    add = p.add_argument_group("data pipeline (§4.3.1-4.3.2)").add_argument
    add("--tile", type=cli.at_least(int, 16), help="training tile and transformer input side (256)")
    add("--no-augment", dest="augment", action="store_false", default=None, help="no rotations or flips")
    add("--rotation", choices=data.ROTATIONS, help="any: uniform in [-180, 180], bilinear (§4.3.2); "
        "any-nearest: the same angles, nearest neighbour; right: multiples of 90 degrees")
    add("--sampling", choices=["tiles", "crops"], help="tiles: the fixed grid (§4.3.1); crops: a fresh "
        "random window per sample and epoch")
    add("--val-fraction", type=cli.fraction, help="share of the training tiles held out (0.1, §4.3.2)")
    add("--preprocess", choices=degrade.PREPROCESSING, help="App. A baselines on every image the model "
        "sees: CLAHE, or histogram matching to --match-to")
    add("--match-to", metavar="DIR", help="--preprocess hist_match: the data set whose training images "
        "give the mean histogram (App. A); its masks are never read")
    add = p.add_argument_group("the built-in synthetic set (without --data)").add_argument
    add("--train-images", type=cli.at_least(int))
    add("--test-images", type=cli.at_least(int))
    add("--image-side", type=cli.at_least(int, 16))
    add = p.add_argument_group("model knobs (default: the arch's best, Table 5.1, App. B)").add_argument
    add("--batch-norm", dest="batch_norm", action="store_true", default=None)
    add("--no-batch-norm", dest="batch_norm", action="store_false")
    add("--bn-momentum", type=cli.unit_interval, help="torch convention; 0.01 = Keras's 0.99 (the thesis's)")
    add("--dropout", type=cli.fraction, nargs="+", help="one rate, or one per level incl. bottleneck")
    add("--vit-dropout", type=cli.fraction, help="UNETR/YNETR: the ViT's attention and MLP dropout (0.1)")
    add("--activation", choices=["relu", "elu", "gelu"])
    add("--init", help="kernel initialiser: glorot_uniform or he_normal (Table 5.1)")
    add("--attention-gates", action="store_true", default=None, help="U-Net only (Table 5.1)")
    add("--fused-attention", action="store_true", default=None,
        help="UNETR/YNETR: Eq. 2.1 by torch's fused kernel (same outputs to rounding)")
    add = p.add_argument_group("machine").add_argument
    add("--amp", action="store_true", default=None, help="bf16 autocast (CUDA, or a CPU with bf16 units)")
    add("--channels-last", dest="channels_last", action="store_true", default=None,
        help="NHWC weights, faster convolutions (on in the demo)")
    add("--no-channels-last", dest="channels_last", action="store_false")
    add("--compile", action="store_true", default=None, help="torch.compile the training model (GPU)")
    add("--workers", type=cli.at_least(int, 0), help="DataLoader workers (default 0 on CPU, 4 on GPU)")
    add("--threads", type=cli.at_least(int), help="CPU threads for torch (1 in the demo)")
    add("--progress", action="store_true", default=None, help="the per-epoch bar even off a terminal")
