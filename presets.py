"""Every run setting of the project in one place: the thesis's protocol, and the lighter presets.

Thesis: §4.3.1-4.3.2 (data processing and training setup), App. B Table 2 (the best assignment of the
hyperparameter search), App. A "Multi-task neural networks" (the domain-adaptation run).

A preset is a whole dict of settings. `THESIS` is the protocol, a comment per value citing where the
thesis states it; each other preset is `{**THESIS, ...}` naming only what it changes, each change with
its one-line reason. train.py runs `THESIS` with `--data` and `DEMO` without (`--preset` picks any of
them); reproduce.py's `--quick` tables run `QUICK`; Table A.1 on the built-in domains runs `LIGHT`
(baselines, through train.py) and `ADAPT_LIGHT` (the Attention Y-Net, through adapt.py).
The measurements behind the lighter presets are in docs/speed.md and docs/domain-adaptation.md.
"""

THESIS = {
    "tile": 256,              # §4.3.1: 256x256 patches; also the transformers' input side
    "filters": None,          # the arch's own: 16 for the U-Net family [34], 32 for UNETR/YNETR (Table 5.2)
    "epochs": 360,            # §4.3.2, App. B Table 2
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
    "channels_last": False,   # memory layout only; the thesis code's Keras default is NHWC anyway
    "threads": None,          # torch's own choice: one per core
    "repeats": 1,             # §5 reports 10 runs; reproduce.py runs them
}

# The demo: a UNETR-2D Mini on the built-in synthetic EM set in about 2.5 minutes on a 2-core CPU.
DEMO = {
    **THESIS,
    "tile": 128,              # a quarter of the pixels per step
    "filters": 8,             # halves a step: convolutions, mostly their backward pass, are ~70% of it
    "epochs": 30,             # (per arch below) a few thousand steps in all
    "patience": None,         # too short a run to stop early
    "batch_size": 4,
    "lr": 1e-3,               # ten times the thesis's: few steps to learn in
    "bn_momentum": 0.1,       # Keras's 0.99 needs hundreds of steps to settle; torch's default
    "channels_last": True,    # 7-20% faster convolutions on a CPU
    "threads": 1,             # the demo's small tensors run faster on one thread than on two
}
# Epochs per arch, so that each demo costs about what 30 epochs of UNETR-2D Mini cost (per epoch on one
# thread: YNETR-2D 1.7x, Attention Y-Net with BatchNorm 1.8x, Attention U-Net with BatchNorm 1.4x,
# U-Net 0.85x).
DEMO_EPOCHS = {"unetr2d": 30, "ynetr2d": 18, "unet": 35, "attention_unet": 22, "attention_ynet": 17}
# Without BatchNorm the attention-gated CNNs predict no mitochondria for their first 10-15 epochs and end
# a short run far behind; with it they learn as fast as the others (`--no-batch-norm`: the thesis's).
DEMO_BATCH_NORM = ("attention_unet", "attention_ynet")

# The built-in synthetic EM set (synthetic.py), on which every run without --data trains. Not the
# thesis's: for the demo's number of steps, 48 images for 30 epochs scored 0.836, 24 for 60 epochs 0.806.
SYNTHETIC = {"train_images": 48, "test_images": 8, "image_side": 256}
DEMO_DATA_SEED = 2022  # the synthetic train and test sets are the same for every run seed

# reproduce.py --quick: every table in minutes on a CPU. Each row keeps its thesis arch and filters.
QUICK = {
    **DEMO,
    "tile": 32, "image_side": 128, "train_images": 3, "test_images": 2,  # tiny images: seconds per run
    "epochs": 4,
}

# Table A.1's baselines on the built-in domains "a" and "b" (adapt.py --table without folders).
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
}
ADAPT_LIGHT = {
    **ADAPT,
    "crops": 240, "tile": 128, "filters": 8,  # a CPU budget
    "batch_size": 4, "stage_lr": (1e-3, 1e-3, 1e-3),  # batch 1 at lr 2e-4 never learnt the source in time
    # stage 3 reached a source IoU_F of 0.71-0.78 with it, 0.52 without
    "batch_norm": True, "bn_momentum": 0.1,
    "stage_epochs": (5, 3, 15),
}

PRESETS = {"thesis": THESIS, "demo": DEMO, "quick": QUICK, "light": LIGHT}


def for_arch(name, arch):
    """The settings of preset `name` for `arch`: the demo's (and quick's) per-arch changes applied."""
    settings = {**SYNTHETIC, **PRESETS[name]}
    if name in ("demo", "quick") and arch in DEMO_BATCH_NORM:
        settings["batch_norm"] = True
    if name == "demo":
        settings["epochs"] = DEMO_EPOCHS[arch]
    return settings


NONE_MEANS = {"filters": "the arch's", "batch_norm": "the arch's", "patience": "off",
              "threads": "one per core"}


def _shown(key, value):
    if value is None:
        return NONE_MEANS[key]
    if type(value) is bool:
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def differences(settings, thesis=THESIS):
    """'tile 128 (thesis 256), ...': where `settings` depart from `thesis` (THESIS, perhaps with the
    arch's own values filled in); "" when nowhere."""
    keys = [k for k in thesis if k in settings and settings[k] != thesis[k]]
    return ", ".join(f"{k.replace('_', ' ')} {_shown(k, settings[k])} (thesis {_shown(k, thesis[k])})"
                     for k in keys)
