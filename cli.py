"""What every program of the project shares at its edges: errors, numbers, devices, folders, JSON.

Not in the thesis: this is the plumbing of train.py, predict.py, adapt.py, reproduce.py, bench.py,
rotation_study.py, data.py's report and exercises.py, so that a mistake looks and exits the same in
all of them. A user's mistake (a bad flag value, a missing folder, an unreadable file, an output
folder that is not empty) is a `UsageError`, or a subclass such as `data.DataError` and
`models.CheckpointError`; `main` prints it as one line on stderr, `error: ...`, and exits with code
2, with no traceback, before anything is written. Ctrl-C exits with 130. A warning is one line too.

Importing this module sets OMP_WAIT_POLICY=PASSIVE unless the user set it: idle CPU threads sleep
instead of spinning, which made a step 4-6x slower on a busy 2-core machine (docs/speed.md). OpenMP
reads it once, when torch loads it, so every program imports cli before torch. It also asks the C
library to keep large freed memory for reuse (`keep_freed_memory`).
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
import warnings

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory():
    """Ask glibc's malloc to keep freed blocks of any size for reuse -> whether it took the settings.

    By default a block over 32 MiB (a CPU step's activations, a large slice's window) is mapped afresh
    from the system and handed back when freed, and the kernel zeroes every page of each new mapping on
    first touch: on a 2-core CPU that kernel time was 14% of a demo step and half of predicting a
    5376x5376 slice (docs/speed.md). Kept blocks raise the peak memory by about one step's working set.
    Where the C library is not glibc (macOS, Windows, musl), nothing changes.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, (1 << 31) - 1))


KEEPS_FREED_MEMORY = keep_freed_memory()


class UsageError(Exception):
    """A mistake in the user's input: printed as one line naming the file or flag and the fix, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line too (argparse prints its usage first)."""

    def error(self, message):
        raise UsageError(f"{message} (python {self.prog} --help lists the flags)")


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def main(run, argv=None):
    """A program's entry point: run(argv) with argv from the command line by default.

    UsageError -> `error: <message>` on stderr and exit code 2; KeyboardInterrupt -> exit code 130.
    """
    argv = sys.argv[1:] if argv is None else argv
    formatter = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return run(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        warnings.formatwarning = formatter


def at_least(kind, minimum=1):
    """An argparse type: `kind(text)`, refused below `minimum` (argparse then exits with code 2)."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def fraction(text):
    """An argparse type: a float in [0, 1) (a share held out, a dropout rate)."""
    value = at_least(float, 0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def unit_interval(text):
    """An argparse type: a float in [0, 1] (a loss weight, a momentum)."""
    value = at_least(float, 0.0)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def pick_device(name):
    """'auto' (CUDA, then Apple's MPS, then the CPU), or the device asked for if torch can reach it."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name == "mps" and not (mps is not None and mps.is_available()):
        raise UsageError("--device mps: Apple's MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n=None):
    """torch's CPU thread count set to n for the block (when n is given), the caller's restored after it."""
    import torch

    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


def refuse_nonempty(folder, flag="--out", hint="choose a new folder"):
    """A new output folder must be missing or empty: nothing a user already has is overwritten."""
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise UsageError(f"{flag} {folder} already exists and is not empty; {hint}")


def _plain(obj):
    """JSON has no NaN or infinity: null in their place, inside lists and dicts too."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def write_json(obj, path):
    """Write JSON to a temporary file and rename it, so a crash never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_plain(obj), f, indent=2)
    os.replace(tmp, path)


def read_json(path, what="file"):
    """A JSON file written by this project; a missing or damaged one is a UsageError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read this {what} ({exc.strerror})") from None
    except ValueError:
        raise UsageError(f"{path}: this {what} is not valid JSON; the file is damaged or was "
                         "edited") from None


def mean_std(values, digits=3):
    """'0.836 ± 0.004' over repeated runs (std with ddof 0), '0.836' for one run, '—' for none (§5)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "—"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std():.{digits}f}" if v.size > 1 else "")


def clock(seconds):
    """Seconds as m:ss (h:mm:ss from an hour on), for elapsed times and ETAs."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
