"""The thesis's networks by name, and the checkpoints that save and rebuild them.

Thesis: Tables 5.1-5.4 (U-Net, Attention U-Net, UNETR-2D, YNETR-2D and their sizes), App. A (the
Attention Y-Net), §3.3 (starting from another run's weights: `load_matching`).

A checkpoint is a dict of plain data: "model" (the state_dict), "config" (arch, size, filters
and model_kwargs, `network_config`: enough to build the network again), "run" (the run's settings,
presets.RunConfig) and, in last.pt, "state" (optimiser, schedule and random states for --resume). It
is read with torch.load(weights_only=True), so a file from elsewhere can hold only tensors, numbers,
strings, lists and dicts, never code.
"""
import os
import pickle

import torch

import cli
import unet
import unetr2d
import ynetr2d


class CheckpointError(cli.UsageError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit: one line, exit code 2."""


# A literal table instead of a registry. `filters`: the thesis's best initial filters, the one place they
# are written (16 for the U-Net family [34]; 32 for UNETR-2D/YNETR-2D, Table 5.2; 32 for the Attention
# Y-Net, App. A). `sized`: a transformer, built in a Table 5.3 size for a fixed input side. `knobs`: the
# model settings of train.py its constructor takes (Table 5.1's components, App. B).
CNN_KNOBS = ("batch_norm", "dropout", "activation", "init")
ARCHS = {
    "unet": {"cls": unet.UNet, "filters": 16, "sized": False, "knobs": CNN_KNOBS + ("attention_gates",)},
    "attention_unet": {"cls": unet.AttentionUNet, "filters": 16, "sized": False,
                       "knobs": CNN_KNOBS + ("attention_gates",)},
    "unetr2d": {"cls": unetr2d.UNETR2D, "filters": 32, "sized": True,
                "knobs": CNN_KNOBS + ("vit_dropout", "fused_attention")},
    "ynetr2d": {"cls": ynetr2d.YNETR2D, "filters": 32, "sized": True,
                "knobs": CNN_KNOBS + ("vit_dropout", "fused_attention")},
    "attention_ynet": {"cls": unet.AttentionYNet, "filters": 32, "sized": False, "knobs": CNN_KNOBS},
}


def build_model(arch, size="mini", filters=None, **kw):
    """The network `arch` with the thesis's best settings, overridden by keyword arguments."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    kw = {k: v for k, v in kw.items() if v is not None}
    kw["filters"] = spec["filters"] if filters is None else filters
    if spec["sized"]:
        kw["size"] = size
    return spec["cls"](**kw)


def model_kwargs(arch, tile=256, **knobs):
    """Constructor keywords of `arch` from the model knobs that are set (None: the arch's thesis default).

    A knob the arch has no argument for is the user's mistake (a UsageError naming its flag). The
    transformers take the input side too (`img_size`: their position embedding depends on it).
    """
    kw = {k: v for k, v in knobs.items() if v is not None}
    for key in kw:
        if key not in ARCHS[arch]["knobs"]:
            raise cli.UsageError(f"--{key.replace('_', '-')} does not apply to --arch {arch}; drop the flag")
    if ARCHS[arch]["sized"]:
        kw["img_size"] = tile
    return kw


def display_name(arch, size, filters):
    """'unetr2d mini F=32', or 'unet F=16' for a CNN (the size is a transformer's)."""
    return f"{arch} {size} F={filters}" if ARCHS[arch]["sized"] else f"{arch} F={filters}"


def network_config(arch, size, filters, model_kwargs):
    """What a checkpoint records about its network: enough for `rebuild` to build it again."""
    return {"arch": arch, "size": size, "filters": filters, "model_kwargs": model_kwargs}


def count_parameters(model):
    """(trainable parameters, trainable + BatchNorm running statistics as Keras counted them)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    running = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, trainable + running


def summary(arch, size, filters, kwargs, thesis=None):
    """Lines: the parameter count at the thesis's 256x256 input, beside `thesis` (millions, Table 5.2/5.4)."""
    model = build_model(arch, size, filters,
                        **({**kwargs, "img_size": 256} if ARCHS[arch]["sized"] else kwargs))
    params, keras = count_parameters(model)
    lines = [f"{display_name(arch, size, filters)}: {params:,} trainable parameters "
             f"({keras:,} with BatchNorm running statistics)"]
    if thesis:
        lines.append(f"thesis: {thesis}M (Tables 5.2/5.4); ours {params / 1e6:.3g}M, "
                     f"{100 * (params / 1e6 / thesis - 1):+.2f}%")
    else:
        lines.append("thesis: no parameter count reported for this configuration")
    return lines


def set_bn_momentum(model, momentum):
    """Every BatchNorm's running-average update (torch convention: 0.01 = Keras's 0.99, the thesis code's)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = momentum


# ----------------------------------------------------------------------------------------------
# Checkpoints: written atomically, read as data only.

def save_atomic(obj, path):
    """torch.save to a temporary file and rename, so a crash never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


CONFIG_KEYS = ("arch", "size", "filters", "model_kwargs")  # network_config's
# What prediction needs of the run that wrote a checkpoint (presets.RunConfig has them all).
RUN_KEYS = ("preprocess", "target_hist", "threads", "channels_last")


def rebuild(checkpoint, name="checkpoint"):
    """The model a checkpoint describes (its `config`), with the checkpoint's weights loaded.

    Refuses, as a CheckpointError naming `name`, a config that builds no model or weights that do not fit it.
    """
    cfg = checkpoint["config"]
    try:
        model = build_model(cfg["arch"], cfg["size"], cfg["filters"], **cfg["model_kwargs"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{name}: its config does not describe a model of this project "
                              f"({exc})") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{name}: its tensors do not fit a {cfg['arch']} built from its own config "
                       f"({first}); the file is damaged or was edited") from None
    return model


def load_checkpoint(path, flag, keys=("model", "config", "run")):
    """A checkpoint written by train.py, loaded as data only (weights_only=True: tensors, numbers,
    strings, lists and dicts), so a downloaded file cannot run code. Anything else is a CheckpointError
    with one line naming the file and what is wrong."""
    name = f"{flag} {path}"
    if not os.path.isfile(path):
        raise CheckpointError(f"{name}: no such file; pass the best.pt or last.pt of an earlier run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a pickle at all, or a damaged one
            raise CheckpointError(f"{name}: not a checkpoint written by train.py (unreadable); "
                           "pass the best.pt or last.pt of an earlier run") from None
        raise CheckpointError(f"{name}: refused, the file holds Python objects other than tensors, numbers, "
                       "strings, lists and dicts (loading it could run code); use a checkpoint written by "
                       "train.py") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(f"{name}: not a checkpoint written by train.py ({exc.__class__.__name__}); "
                       "pass the best.pt or last.pt of an earlier run") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name}: not a checkpoint written by train.py "
                              f"(a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in keys if k not in ckpt]
    for key, inner in (("config", CONFIG_KEYS), ("run", RUN_KEYS)):
        if key in keys and key not in missing:
            missing += [f"{key}.{k}" for k in inner if not isinstance(ckpt[key], dict) or k not in ckpt[key]]
    if missing:
        raise CheckpointError(f"{name}: not a checkpoint written by train.py "
                              f"(no {', '.join(missing)} inside)")
    if "model" in keys and not (isinstance(ckpt["model"], dict)
                                and all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())):
        raise CheckpointError(f"{name}: its 'model' entry is not a table of tensors; the file is damaged "
                              "or was edited")
    return ckpt


def matching_tensors(model, path, network):
    """The tensors of checkpoint `path` whose name and shape fit `model` -> (source state, names that fit).

    A checkpoint that fits nothing of `model` (another network, an empty state) is refused: a
    CheckpointError naming both networks (`network` is ours, in words), so that a run never trains from
    scratch by mistake. "Nothing" is under 1% of the model's weights: between two of this project's
    networks the 1-element bias of the output head always shares its name and shape.
    """
    ckpt = load_checkpoint(path, "--init-from", keys=("model",))
    source, own = ckpt["model"], model.state_dict()
    fits = [k for k, v in source.items() if k in own and own[k].shape == v.shape]
    total = sum(v.numel() for k, v in own.items() if v.is_floating_point())
    if sum(own[k].numel() for k in fits if own[k].is_floating_point()) < 0.01 * total:
        cfg = ckpt.get("config")
        theirs = ("a " + display_name(cfg["arch"], cfg["size"], cfg["filters"])
                  if isinstance(cfg, dict) and cfg.get("arch") in ARCHS and {"size", "filters"} <= set(cfg)
                  else f"{len(source)} tensors of no network this project builds")
        raise CheckpointError(f"--init-from {path}: nothing of it fits the {network} being trained (the "
                              f"checkpoint holds {theirs}; {len(fits)} of its {len(source)} tensors fit); "
                              "start from a checkpoint of the same network")
    return source, fits


def check_init_from(path, arch, size, filters, model_kwargs):
    """Refuse an --init-from checkpoint that is none or fits nothing of the network (matching_tensors on a
    network built on the meta device: no memory, no time), before a run makes its folder."""
    with torch.device("meta"):
        network = build_model(arch, size, filters, **model_kwargs)
    matching_tensors(network, path, display_name(arch, size, filters))


def load_matching(model, path, network):
    """Start from a checkpoint (§3.3): copy every tensor whose name and shape match (`matching_tensors`)
    -> what was loaded and what was left as initialised (a different output head, another input size's
    position embedding, a layer the source lacks), by module: 'loaded 40 tensors (encoder.blocks, ...)'."""
    source, loaded = matching_tensors(model, path, network)
    own = model.state_dict()
    own.update({k: source[k] for k in loaded})
    model.load_state_dict(own)
    fresh = [k for k in own if k not in loaded]
    return (f"loaded {len(loaded)} tensors ({module_names(loaded)})"
            + (f"; kept as initialised: {len(fresh)} ({module_names(fresh)})" if fresh else
               "; every tensor matched"))


def module_names(keys):
    """'encoder.blocks.0.attn.q_proj.weight' -> 'encoder.blocks', grouped in first-seen order."""
    groups = {}
    for key in keys:
        parts = key.split(".")
        groups[".".join(parts[:2]) if len(parts) > 2 else parts[0]] = True
    return ", ".join(groups)
