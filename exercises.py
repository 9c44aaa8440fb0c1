"""Course kit: exercises solved in the real code of this project, graded by tests of behaviour.

    python exercises.py list                             # every exercise: thesis, file, task, hint
    python exercises.py make ../course [--only 1,4,7]    # a student copy with those bodies blanked
    python exercises.py check 3 [--dir ../course]        # grade exercise 3 (or 1,4,7, or all)

Thesis: one exercise per block of chapters 2-4 and Appendix A, from Eq. 2.1 (attention) to App. A
Eq. 1 (the Attention Y-Net loss); each names its section, equation, figure or table.

`make` parses each file with `ast` and replaces the body of every chosen function, after its
signature and docstring, with `raise NotImplementedError("exercise N: ...")`; every other byte of
the project is copied as it is, so the copy imports, builds its models and runs its tests, and
only what calls a blanked body fails. `check` imports the modules of DIR in a fresh process and
tests behaviour only (torch's own ops, float64 references, closed forms), never the text of the
code, so any correct solution passes. Where an exercise's code calls another's (a Transformer
layer calls the attention), the check puts a stand-in built on torch's own ops in its place, so
every exercise is graded on its own.
"""
import argparse
import ast
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = ".exercises.json"  # written into a student copy: which exercises it blanks
COPY_DIRS = ("tests", ".ci")  # besides the top-level files; never runs/, .git or data folders
COPY_SUFFIXES = (".py", ".md", ".txt", ".toml", ".cfg", ".ini")


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    thesis: str
    targets: tuple  # ((file, qualified function name), ...), all blanked together
    task: str
    hint: str


EXERCISES = [
    Exercise(1, "Scaled dot-product attention", "§2.2.1.1, Eq. 2.1, Fig. 2.4 (left)",
             (("attention.py", "scaled_dot_product_attention"),),
             "Given per-head queries, keys and values of shape (B, h, N, d), return softmax(QK^T / sqrt(d_k)) V "
             "and the attention weights. The scale 1/sqrt(d_k) keeps the softmax from saturating. The weights are "
             "returned before dropout (every row sums to 1); when `training` and `dropout` > 0 the output is "
             "computed from the dropped-out, rescaled weights, as in Vaswani et al. [7].",
             "k.transpose(-2, -1) swaps the last two axes; torch.softmax(scores, dim=-1) normalises each "
             "query's row stably; F.dropout(weights, p, training) does nothing outside training."),
    Exercise(2, "Multi-head split and merge", "§2.2.1.1, Fig. 2.4 (right)",
             (("attention.py", "MultiHeadSelfAttention.forward"),),
             "Project x (B, N, D) to queries, keys and values with q_proj, k_proj and v_proj, split the h*d "
             "features into h heads (head i owns features i*d to (i+1)*d), run scaled_dot_product_attention on "
             "all heads at once, concatenate the heads back to (B, N, h*d) and apply out_proj. With "
             "return_weights, also return the weights (B, h, N, N). Both layouts must work: every head of full "
             "width d = D (the thesis code) and d = D / h (Vaswani et al.).",
             "view(B, N, h, d).transpose(1, 2) gives (B, h, N, d). After the attention, transpose back and use "
             "reshape, not view: the tensor is no longer contiguous."),
    Exercise(3, "Patch embedding and position embedding", "§2.2.5, Fig. 2.5",
             (("vit.py", "PatchEmbedding.forward"),),
             "Cut the (B, C, H, W) image into non-overlapping P x P patches in row-major order (token n is "
             "patch row n // (W/P), column n % (W/P)), flatten each patch in (C, P_row, P_col) order, project it "
             "to D with self.proj and add the learned position embedding self.pos_embed, one vector per patch "
             "position (no class token, as in UNETR [33]). Refuse an input that is not img_size x img_size with "
             "a ValueError.",
             "reshape to (B, C, H/P, P, W/P, P), permute to (B, H/P, W/P, C, P, P), reshape to (B, N, C*P*P). "
             "The result equals a Conv2d with kernel = stride = P whose weight is proj.weight viewed as (D, C, P, P)."),
    Exercise(4, "One pre-norm encoder layer", "§2.2.1, Eq. 2.2, Fig. 2.3, Fig. 2.5",
             (("vit.py", "TransformerBlock.forward"),),
             "x = x + MHSA(LN1(x)), then x = x + MLP(LN2(x)), where the MLP of the thesis code is fc1, GELU, "
             "dropout, fc2, GELU, dropout. The layer is pre-norm as in ViT [13]: each LayerNorm sits inside its "
             "residual branch, not after the sum as in Fig. 2.3. With return_weights, also return the attention "
             "weights (B, h, N, N).",
             "self.attn(self.norm1(x), return_weights=True) gives both the output and the weights; self.act is "
             "the exact GELU and self.drop the dropout. Eq. 2.2 has one ReLU; the thesis code puts GELU after "
             "both linear maps."),
    Exercise(5, "UNETR-2D skips: reshape, taps, blue blocks", "§2.2.5, §3.1, Fig. 2.6, Table 5.3",
             (("vit.py", "tokens_to_image"), ("unetr2d.py", "ViTSide.vit_skip"), ("unetr2d.py", "BlueBlock.forward")),
             "Level l of UNETR-2D (1 <= l < K) reads the output of encoder layer S_m * l (z3, z6, z9 for Base), "
             "folds its N tokens back onto the (H/P, W/P) patch grid and brings it to H / 2^l with K - l blue "
             "blocks; level 0 is a double block on the raw input. Write tokens_to_image (token n lands at "
             "divmod(n, W/P)), ViTSide.vit_skip (self.skip_layers holds the 1-based layer numbers S_m * l, "
             "self.skips[l] the blocks of level l) and BlueBlock.forward (transpose conv, then conv block).",
             "z.reshape(B, H/P, W/P, D).permute(0, 3, 1, 2). hidden[i] is the output of layer i + 1. Table 5.3 "
             "gives S_m = 1, 2, 3 for Mini, Small and Base."),
    Exercise(6, "Attention gate", "§2.1, Fig. 2.2 (refs. [34], [41])",
             (("unet.py", "AttentionGate.coefficients"), ("unet.py", "AttentionGate.forward")),
             "coefficients: alpha = sigmoid(psi(ReLU(W_skip * skip + W_up * up))) with the 1x1 convolutions "
             "skip_proj, up_proj and psi, each followed by its norm (an identity without BatchNorm): one "
             "coefficient in (0, 1) per pixel, (B, 1, H, W). forward: alpha rescales the upsampled decoder "
             "signal in mode 'up' (the code of [34], behind the thesis's numbers) or the encoder skip in mode "
             "'skip' (Oktay et al. [41]).",
             "Each norm comes right after its convolution, before the sum; alpha broadcasts over the channels."),
    Exercise(7, "Mirror padding to a multiple", "§4.3.1",
             (("data.py", "padding_for"), ("data.py", "pad_to_multiple")),
             "Training tiles (256) and whole-slice U-Net inference (16) both mirror-pad a slice up to the next "
             "multiple. padding_for(size, multiple) gives (before, after), the odd pixel before, nothing when "
             "size is already a multiple. pad_to_multiple pads the last two axes of any array with NumPy's "
             "'symmetric' mode, which repeats the edge pixel (d c b a | a b c d), and leaves leading axes alone.",
             "-size % multiple is the total padding; np.pad takes one (before, after) pair per axis."),
    Exercise(8, "Overlap-tile layout", "§4.2, Fig. 4.2, Fig. 4.3",
             (("stitch.py", "_axis_layout"), ("stitch.py", "tile_layout")),
             "Lay 256 x 256 windows at stride 128 over a mirror-padded slice so that their central 128 x 128 "
             "relevant patches tile it. A side divisible by 128 gets 64 px of padding at each end (Fig. 4.2); "
             "any other side gets the least padding that makes it a multiple of 128, split as evenly as "
             "possible, and the border relevant patches grow until they reach the image border, so no kept "
             "pixel is padding (Fig. 4.3). _axis_layout solves one axis; tile_layout combines both axes into "
             "row-major Tile(window, kept, offset) records plus the padding for np.pad.",
             "With margin m = (window - keep) / 2 and n = max(1, size // keep) windows, the padded side is "
             "n * keep + 2m and window k starts at k * keep. tile_layout's docstring draws both cases."),
    Exercise(9, "IoU_F and Dice", "§4.2.1, Eq. 4.1, Eq. 4.2, Fig. 4.5",
             (("evaluate.py", "iou_from_counts"), ("evaluate.py", "dice_from_counts"),
              ("evaluate.py", "iou_foreground"), ("evaluate.py", "dice_coefficient")),
             "Dice = 2TP / (2TP + FP + FN) and IoU_F = TP / (TP + FP + FN), the foreground (mitochondria) being "
             "the positive class. Write both from the counts (an empty prediction of an empty mask scores 1) "
             "and from two boolean masks (`confusion` gives the counts). True negatives do not enter: the "
             "background dominates EM slices, and counting it would inflate the score, which is why the thesis "
             "reports IoU_F.",
             "Guard the 0 / 0 case before dividing and return a float."),
    Exercise(10, "Two pretext degradations", "§3.3, Fig. 3.2, Table 5.5",
             (("degrade.py", "gaussian_noise"), ("degrade.py", "cutout")),
             "gaussian_noise adds N(0, sigma) noise, sigma = 0.15 * 255, drawn once per pixel from rng, then "
             "rounds and clips to uint8. cutout fills between n_min and n_max boxes (both included) of "
             "round(size * H) x round(size * W) pixels with `fill`; each box centre is uniform over the image, "
             "and a box is cut off where it leaves the image. Both are pure: they never change their input and "
             "draw only from rng.",
             "_to_uint8 rounds and clips. astype(np.uint8) on values outside [0, 255] wraps around. "
             "rng.integers(low, high) never returns high."),
    Exercise(11, "Histogram matching", "App. A (Histogram matching), Table 1",
             (("degrade.py", "match_histogram"),),
             "Map the grey levels of a uint8 image so that its CDF follows a target histogram of 256 bins (the "
             "mean histogram of the target domain): look each level's quantile in the source CDF up in the "
             "target CDF, by linear interpolation over the target's non-empty levels. With fix_zero_peak the "
             "zero padding is discounted: the source count of 0 becomes the line through the counts of 1 and 2 "
             "(when 0, 1 and 2 all occur; else 0, or 1 for an all-black image), never below 0, and 0 stays 0.",
             "np.bincount(image.ravel(), minlength=256), np.cumsum and np.interp(source_cdf, target_cdf, levels) "
             "give a 256-entry lookup table; index it with the image."),
    Exercise(12, "Training losses and the Attention Y-Net loss", "App. A Eq. 1, §4.3.2, §5.3, App. B Table 2",
             (("train.py", "compute_loss"),),
             "One function gives every training objective. A segmentation network: BCE on the logits (§4.3.2), "
             "plus the Dice loss when loss is 'bce_dice' (App. B). A pretext run (pretext true): MSE "
             "between sigmoid(logits) and the clean image (§5.3). The Attention Y-Net returns (segmentation "
             "logits, reconstruction in [0, 1]): L = alpha * MSE(reconstruction, x) + (1 - alpha) * "
             "BCE(segmentation, y), alpha the keyword argument (App. A Eq. 1), where a sample whose mask is -1 (an "
             "unlabelled target image) has a BCE of 0 and the BCE is averaged over the batch; in a pretext run "
             "only the reconstruction's MSE against y.",
             "F.binary_cross_entropy_with_logits(..., reduction='none') gives per-pixel terms to average per "
             "sample; F.mse_loss; dice_loss is defined just above."),
]
BY_NUMBER = {e.number: e for e in EXERCISES}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


# ---------------------------------------------------------------- blanking bodies with ast

def find_function(tree, qualname):
    """The def named by `qualname` ('f' or 'Class.method') at module level; the last one if redefined."""
    node, scope = None, tree.body
    for part in qualname.split("."):
        found = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and n.name == part]
        if not found:
            return None
        node, scope = found[-1], found[-1].body
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def body_span(func, lines):
    """(first, last) 1-based lines of what blanking replaces: after the docstring (or the header,
    with the comments under it) to the end of the function; last = first - 1 for an empty span."""
    first_stmt = func.body[0]
    has_doc = isinstance(first_stmt, ast.Expr) and isinstance(first_stmt.value, ast.Constant) \
        and isinstance(first_stmt.value.value, str)
    if has_doc:
        first = first_stmt.end_lineno + 1
    else:
        if first_stmt.lineno == func.lineno:
            raise UsageError(f"{func.name}: its body shares the line of its def; put it on lines of its own")
        first = first_stmt.lineno
        while first - 1 > func.lineno and lines[first - 2].strip()[:1] in ("", "#"):
            first -= 1  # comments between the header and the first statement go too
    return first, max(func.end_lineno, first - 1)


def blank_source(text, targets):
    """`text` with the body of each (qualname, message) in `targets` replaced by raise NotImplementedError.

    Splices whole lines, bottom up, so every byte outside the replaced bodies is kept.
    """
    tree = ast.parse(text)
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    spans = []
    for qualname, message in targets:
        func = find_function(tree, qualname)
        if func is None:
            raise UsageError(f"no function {qualname} found")
        first, last = body_span(func, lines)
        indent = re.match(r"[ \t]*", lines[func.body[0].lineno - 1]).group()
        eol = "\r\n" if lines[func.lineno - 1].endswith("\r\n") else "\n"
        if last >= first and not lines[last - 1].endswith("\n"):
            eol = ""  # the function ended the file without a newline
        spans.append((first, last, f"{indent}raise NotImplementedError({json.dumps(message)}){eol}"))
    for first, last, raise_line in sorted(spans, reverse=True):
        lines[first - 1:last] = [raise_line]
    out = "".join(lines)
    new_tree = ast.parse(out)  # must still be valid Python with the same functions
    for qualname, _ in targets:
        assert isinstance(find_function(new_tree, qualname).body[-1], ast.Raise), qualname
    return out


def raise_message(exercise):
    return f"exercise {exercise.number}: {exercise.title} (python exercises.py list {exercise.number})"


def parse_numbers(text, flag):
    """'1,4,7' or 'all' -> sorted exercise numbers."""
    if text.strip() == "all":
        return sorted(BY_NUMBER)
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        numbers = []
    unknown = [n for n in numbers if n not in BY_NUMBER]
    if not numbers or unknown:
        raise UsageError(f"{flag} {text}: give exercise numbers from 1 to {len(EXERCISES)}, comma separated "
                         "(python exercises.py list shows them), or all")
    return numbers


def project_files(root):
    """Relative paths of what a copy holds: the top-level sources and texts, tests/ and .ci/."""
    files = [n for n in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, n))
             and (n.endswith(COPY_SUFFIXES) or n == ".gitignore")]
    for folder in COPY_DIRS:
        for base, dirs, names in os.walk(os.path.join(root, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.relpath(os.path.join(base, n), root) for n in sorted(names) if not n.endswith(".pyc")]
    return files


def make(directory, numbers, root=HERE):
    """Write a student copy of the project at `root` into `directory`, the chosen exercises blanked.

    Everything is prepared in memory first: a refused copy writes nothing.
    """
    out = os.path.abspath(directory)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"{directory} already exists and is not empty; choose a new folder (nothing was written)")
    if os.path.commonpath([out, os.path.abspath(root)]) == os.path.abspath(root):
        raise UsageError(f"{directory} is inside the project, where its tests would run with the project's; "
                         "choose a folder outside it, e.g. ../course")
    by_file = {}
    for n in numbers:
        for path, qualname in BY_NUMBER[n].targets:
            by_file.setdefault(path, []).append((qualname, raise_message(BY_NUMBER[n])))
    blanked = {}
    for path, targets in by_file.items():
        try:
            with open(os.path.join(root, path), encoding="utf-8", newline="") as f:
                blanked[path] = blank_source(f.read(), targets)
        except (OSError, UsageError) as exc:
            raise UsageError(f"{os.path.join(root, path)}: {exc}; this project no longer has what the exercise "
                             "blanks, so update its targets in EXERCISES") from None
    os.makedirs(out, exist_ok=True)
    for rel in project_files(root):
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        if rel in blanked:
            with open(os.path.join(out, rel), "w", encoding="utf-8", newline="") as f:
                f.write(blanked[rel])
            shutil.copymode(os.path.join(root, rel), os.path.join(out, rel))
        else:
            shutil.copy2(os.path.join(root, rel), os.path.join(out, rel))
    with open(os.path.join(out, MARKER), "w") as f:
        json.dump({"exercises": numbers}, f)
    return out


# ---------------------------------------------------------------- grading

CHECKS = {}  # exercise number -> [(behaviour, check function)]


def behaviour(number, text):
    """Register a check of exercise `number`: it returns on success and raises AssertionError otherwise."""
    def register(fn):
        CHECKS.setdefault(number, []).append((text, fn))
        return fn
    return register


def check(numbers, directory):
    """Grade `numbers` against the project in `directory`, in a fresh Python process; its exit code."""
    directory = os.path.abspath(directory)
    missing = sorted({p for n in numbers for p, _ in BY_NUMBER[n].targets
                      if not os.path.isfile(os.path.join(directory, p))})
    if missing:
        raise UsageError(f"--dir {directory}: no {', '.join(missing)} there; pass the folder of the project or "
                         "of a copy made by python exercises.py make")
    cmd = [sys.executable, "-B", os.path.abspath(__file__), "_grade", ",".join(map(str, numbers)), directory]
    return subprocess.run(cmd, cwd=directory).returncode


def _timeout(signum, frame):
    raise TimeoutError("took longer than 30 s")


def run_check(fn):
    """(passed, reason) of one check; any exception is a failure, reported on one line."""
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(30)
    try:
        fn()
        return True, ""
    except NotImplementedError as exc:
        return False, f"not written yet: {exc}" if str(exc).startswith("exercise ") else f"NotImplementedError: {exc}"
    except AssertionError as exc:
        return False, str(exc) or "assertion failed"
    except SystemExit as exc:
        return False, f"the code called sys.exit({exc.code!r})"
    except Exception as exc:  # noqa: BLE001 - a student's bug of any kind is a failed behaviour
        return False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)


def grade(numbers, directory):
    """In this process: import the project in `directory` and print one line per behaviour."""
    sys.path[:] = [directory] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != HERE]
    torch.set_num_threads(1)  # tiny tensors
    failed_any = False
    for n in numbers:
        passed = 0
        for text, fn in CHECKS[n]:
            ok, why = run_check(fn)
            passed += ok
            print(f"{'PASS' if ok else 'FAIL'} exercise {n}: {text}" + ("" if ok else f" -- {why}"), flush=True)
        total = len(CHECKS[n])
        failed_any |= passed < total
        print(f"exercise {n}: {passed}/{total} behaviours pass", flush=True)
    return 1 if failed_any else 0


def close(got, want, what, tol=1e-9):
    """AssertionError naming `what` unless two tensors or arrays agree in shape and value."""
    got, want = (x if torch.is_tensor(x) else torch.as_tensor(np.ascontiguousarray(x)) for x in (got, want))
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    diff = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    assert diff <= tol, f"{what}: off by up to {diff:.3g}"


@contextlib.contextmanager
def replaced(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def randomise(module, std=0.5, seed=0):
    """Draw every parameter from N(0, std): zero biases from the init would hide a bias bug."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def standin_attention(q, k, v, dropout=0.0, training=False):
    """Exercise 1's job done by torch's own op, so that exercises 2 and 4 are graded on their own."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, h, N, N)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if training else 0.0)  # (B, h, N, d)
    return out, weights


class TorchAttention(nn.Module):
    """Exercise 2's job done by torch.nn.MultiheadAttention; records its input for exercise 4."""

    def __init__(self, embed_dim, n_heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed_dim, n_heads, batch_first=True)
        self.seen = None

    def forward(self, x, return_weights=False):
        self.seen = x
        out, weights = self.mha(x, x, x, need_weights=True, average_attn_weights=False)
        return (out, weights) if return_weights else out


# ----- exercise 1: scaled dot-product attention (Eq. 2.1)

def qkv(B=2, h=3, N=5, d=4, d_v=3, scale=1.0, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(B, h, N, n, generator=g, dtype=torch.float64)).requires_grad_(grad)
            for n in (d, d, d_v)]


@behaviour(1, "returns the output (B, h, N, d_v) and the weights (B, h, N, N)")
def _():
    from attention import scaled_dot_product_attention as sdpa
    out, weights = sdpa(*qkv())
    assert tuple(out.shape) == (2, 3, 5, 3), f"output shape {tuple(out.shape)}, expected (2, 3, 5, 3)"
    assert tuple(weights.shape) == (2, 3, 5, 5), f"weights shape {tuple(weights.shape)}, expected (2, 3, 5, 5)"


@behaviour(1, "output equals torch's F.scaled_dot_product_attention (float64)")
def _():
    from attention import scaled_dot_product_attention as sdpa
    q, k, v = qkv(d=7)
    close(sdpa(q, k, v)[0], F.scaled_dot_product_attention(q, k, v), "output vs torch")


@behaviour(1, "scores are scaled by 1/sqrt(d_k) (Eq. 2.1)")
def _():
    from attention import scaled_dot_product_attention as sdpa
    d = 9  # one query, two keys: the weight of key 1 is sigmoid((q.k1 - q.k2) / sqrt(d)) = sigmoid(6 / 3)
    q, k = torch.zeros(1, 1, 1, d, dtype=torch.float64), torch.zeros(1, 1, 2, d, dtype=torch.float64)
    q[..., 0], k[0, 0, 0, 0] = 1.0, 6.0
    got = sdpa(q, k, torch.eye(2, dtype=torch.float64).view(1, 1, 2, 2))[1][0, 0, 0, 0].item()
    want = 1 / (1 + math.exp(-6.0 / math.sqrt(d)))
    assert abs(got - want) < 1e-9, f"weight of the first key {got:.4f}, expected sigmoid(6 / sqrt(9)) = {want:.4f}"


@behaviour(1, "every row of weights is a softmax: non-negative, sums to 1, finite for large scores")
def _():
    from attention import scaled_dot_product_attention as sdpa
    q, k, v = (t.float() for t in qkv(d=16, scale=30.0))  # scores in the thousands: a bare exp overflows
    weights = sdpa(q, k, v)[1]
    assert torch.isfinite(weights).all() and (weights >= 0).all(), "weights hold NaN, inf or negative values"
    close(weights.sum(-1), torch.ones(2, 3, 5), "row sums", tol=1e-5)


@behaviour(1, "identical keys give uniform weights and the mean of the values")
def _():
    from attention import scaled_dot_product_attention as sdpa
    q, k, v = qkv(N=6)
    k = k[:, :, :1].expand_as(k)
    out, weights = sdpa(q, k, v)
    close(weights, torch.full_like(weights, 1 / 6), "weights")
    close(out, v.mean(dim=2, keepdim=True).expand_as(out), "output")


@behaviour(1, "gradients with respect to q, k and v equal torch's (float64)")
def _():
    from attention import scaled_dot_product_attention as sdpa
    ours, ref = qkv(grad=True), qkv(grad=True)
    g = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    (sdpa(*ours)[0] * g).sum().backward()
    (F.scaled_dot_product_attention(*ref) * g).sum().backward()
    for name, a, b in zip("qkv", ours, ref):
        close(a.grad, b.grad, f"gradient of {name}")


@behaviour(1, "dropout acts on the weights in training only; weights are returned before dropout")
def _():
    from attention import scaled_dot_product_attention as sdpa
    q, k, _ = qkv(N=8)
    v = torch.eye(8, dtype=torch.float64).expand(2, 3, 8, 8)  # out = the weights actually applied
    plain_out, plain_w = sdpa(q, k, v)
    close(sdpa(q, k, v, dropout=0.5, training=False)[0], plain_out, "output with dropout outside training")
    torch.manual_seed(0)
    out, weights = sdpa(q, k, v, dropout=0.5, training=True)
    close(weights, plain_w, "returned weights in training (must be before dropout)")
    kept = out != 0
    assert 0 < kept.float().mean() < 1, "in training with dropout 0.5, some weights must be dropped and some kept"
    close(out[kept], 2 * plain_w[kept], "kept weights (scaled by 1 / (1 - p))")


# ----- exercise 2: multi-head split and merge (Fig. 2.4, right)

def per_head_reference(m, x):
    """Eq. 2.1 head by head in float64, head i on features i*d..(i+1)*d of each projection."""
    d, outs, maps = m.head_dim, [], []
    for i in range(m.n_heads):
        rows = slice(i * d, (i + 1) * d)
        q, k, v = (x @ p.weight[rows].T + p.bias[rows] for p in (m.q_proj, m.k_proj, m.v_proj))  # (B, N, d)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)  # (B, N, N)
        outs.append(w @ v)
        maps.append(w)
    return torch.cat(outs, -1) @ m.out_proj.weight.T + m.out_proj.bias, torch.stack(maps, 1)


def mhsa(D, h, head_dim, seed=0):
    import attention
    return randomise(attention.MultiHeadSelfAttention(D, h, head_dim=head_dim), seed=seed).double().eval()


@behaviour(2, "Vaswani layout (d = D/h) equals torch.nn.MultiheadAttention with the same weights (float64)")
def _():
    import attention
    m = mhsa(12, 3, 4)
    ref = nn.MultiheadAttention(12, 3, batch_first=True).double().eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
        ref.out_proj.load_state_dict(m.out_proj.state_dict())
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        out, weights = m(x, return_weights=True)
    want_out, want_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    close(out, want_out, "output vs torch")
    close(weights, want_w, "weights vs torch")


@behaviour(2, "full-width heads (d = D, the thesis code) equal a per-head float64 reference")
def _():
    import attention
    m = mhsa(8, 4, None, seed=1)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        out, weights = m(x, return_weights=True)
    want_out, want_w = per_head_reference(m, x)
    close(out, want_out, "output")
    close(weights, want_w, "weights")


@behaviour(2, "gradients reach x and every projection as in the per-head reference (float64)")
def _():
    import attention
    m = mhsa(12, 3, 4, seed=2)
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        ours = torch.autograd.grad(m(x).square().sum(), [x] + list(m.parameters()))
    want = torch.autograd.grad(per_head_reference(m, x)[0].square().sum(), [x] + list(m.parameters()))
    for (name, _), a, b in zip([("x", None)] + list(m.named_parameters()), ours, want):
        close(a, b, f"gradient of {name}")


@behaviour(2, "heads are independent: changing head 1's query weights changes head 1's map only")
def _():
    import attention
    m = mhsa(8, 4, 2, seed=3)
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        before = m(x, return_weights=True)[1]
        with torch.no_grad():
            m.q_proj.weight[2:4] += 1.0  # head 1 owns features 2..3
        after = m(x, return_weights=True)[1]
    changed = [(after[:, i] - before[:, i]).abs().max().item() > 1e-9 for i in range(4)]
    assert changed == [False, True, False, False], f"heads whose map changed: {changed}, expected only head 1"


@behaviour(2, "without return_weights the output alone comes back, (B, N, D)")
def _():
    import attention
    m = mhsa(12, 3, None)
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        out = m(torch.randn(2, 5, 12, dtype=torch.float64))
    assert torch.is_tensor(out) and tuple(out.shape) == (2, 5, 12), "expected one (2, 5, 12) tensor"


# ----- exercise 3: patch embedding and position embedding (Fig. 2.5)

def patch_embedding(C=2, img=8, P=4, D=5):
    import vit
    return randomise(vit.PatchEmbedding(img_size=img, patch_size=P, in_channels=C, embed_dim=D)).double()


@behaviour(3, "equals a Conv2d with kernel = stride = P and weight proj.weight, plus pos_embed (C = 2)")
def _():
    pe = patch_embedding()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    conv = F.conv2d(x, pe.proj.weight.view(5, 2, 4, 4), pe.proj.bias, stride=4)  # (B, D, 2, 2)
    close(pe(x), conv.flatten(2).transpose(1, 2) + pe.pos_embed, "tokens vs strided convolution")


@behaviour(3, "tokens are in row-major patch order: token n is patch row n // (W/P), column n % (W/P)")
def _():
    pe = patch_embedding(C=1, img=12, P=4)
    with torch.no_grad():
        pe.pos_embed.zero_()
        pe.proj.bias.zero_()
    for row, col in [(0, 2), (1, 0), (2, 1)]:
        x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
        x[0, 0, 4 * row + 1, 4 * col + 2] = 1.0
        lit = (pe(x)[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
        assert lit == [3 * row + col], f"a pixel of patch ({row}, {col}) reached token(s) {lit}, expected {3 * row + col}"


@behaviour(3, "the position embedding is added, one vector per token (zero image -> proj.bias + pos_embed)")
def _():
    pe = patch_embedding()
    close(pe(torch.zeros(2, 2, 8, 8, dtype=torch.float64)), (pe.proj.bias + pe.pos_embed).expand(2, 4, 5), "tokens")


@behaviour(3, "an input that is not img_size x img_size raises ValueError")
def _():
    pe = patch_embedding()
    try:
        pe(torch.zeros(1, 2, 16, 16, dtype=torch.float64))
    except ValueError:
        return
    raise AssertionError("a 16x16 input to an 8x8 patch embedding did not raise ValueError")


@behaviour(3, "gradients reach proj and pos_embed")
def _():
    pe = patch_embedding()
    pe(torch.randn(2, 2, 8, 8, dtype=torch.float64)).square().sum().backward()
    for name, p in pe.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"


# ----- exercise 4: one pre-norm encoder layer (§2.2.1)

def encoder_layer(dropout=0.0, seed=0):
    """A TransformerBlock whose attention is torch's (exercise 2 done by torch), random weights, float64."""
    import vit
    block = vit.TransformerBlock(8, 2, 16, dropout=dropout, head_dim=4)
    block.attn = TorchAttention(8, 2)
    return randomise(block, seed=seed).double().eval()


def mlp_reference(block, x):
    return F.gelu(block.fc2(F.gelu(block.fc1(F.layer_norm(x, (8,), block.norm2.weight, block.norm2.bias, 1e-6)))))


def attention_reference(block, x):
    return block.attn(F.layer_norm(x, (8,), block.norm1.weight, block.norm1.bias, 1e-6))


@behaviour(4, "pre-norm: the attention reads LayerNorm1(x) (eps 1e-6), not x")
def _():
    block, x = encoder_layer(), torch.randn(2, 6, 8, dtype=torch.float64)
    block(x)
    assert block.attn.seen is not None, "the layer never called self.attn"
    close(block.attn.seen, F.layer_norm(x, (8,), block.norm1.weight, block.norm1.bias, 1e-6), "input of the attention")


@behaviour(4, "attention branch: with the MLP's output zeroed, the layer gives x + MHSA(LN1(x))")
def _():
    block, x = encoder_layer(seed=1), torch.randn(2, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        block.fc2.weight.zero_()
        block.fc2.bias.zero_()
    close(block(x), x + attention_reference(block, x), "output")


@behaviour(4, "MLP branch: with the attention's output zeroed, x + GELU(fc2(GELU(fc1(LN2(x)))))")
def _():
    block, x = encoder_layer(seed=2), torch.randn(2, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        block.attn.mha.out_proj.weight.zero_()
        block.attn.mha.out_proj.bias.zero_()
    close(block(x), x + mlp_reference(block, x), "output")


@behaviour(4, "the whole layer equals a float64 reference: y = x + MHSA(LN1(x)), then y + MLP(LN2(y))")
def _():
    block, x = encoder_layer(seed=3), torch.randn(2, 6, 8, dtype=torch.float64)
    y = x + attention_reference(block, x)
    close(block(x), y + mlp_reference(block, y), "output")


@behaviour(4, "return_weights also returns the attention weights (B, h, N, N)")
def _():
    block, x = encoder_layer(seed=4), torch.randn(2, 6, 8, dtype=torch.float64)
    result = block(x, return_weights=True)
    assert isinstance(result, tuple) and len(result) == 2, "expected (output, weights)"
    ln1 = F.layer_norm(x, (8,), block.norm1.weight, block.norm1.bias, 1e-6)
    close(result[1], block.attn(ln1, return_weights=True)[1], "weights")


@behaviour(4, "the MLP's dropout acts in training only")
def _():
    block, x = encoder_layer(dropout=0.5, seed=5), torch.randn(2, 6, 8, dtype=torch.float64)
    y = x + attention_reference(block, x)
    close(block(x), y + mlp_reference(block, y), "output in eval mode")
    torch.manual_seed(0)
    assert not torch.allclose(block.train()(x), block.eval()(x)), "dropout 0.5 changed nothing in training"


# ----- exercise 5: UNETR-2D skip connections (Fig. 2.6, Table 5.3)

@behaviour(5, "tokens_to_image puts token n at (n // (W/P), n % (W/P)), on square and oblong grids")
def _():
    import vit
    for grid, (gh, gw) in [(3, (3, 3)), ((2, 4), (2, 4))]:
        z = torch.arange(2 * gh * gw * 3, dtype=torch.float64).view(2, gh * gw, 3)
        got = vit.tokens_to_image(z, grid)
        assert tuple(got.shape) == (2, 3, gh, gw), f"shape {tuple(got.shape)}, expected (2, 3, {gh}, {gw})"
        for n in range(gh * gw):
            close(got[:, :, n // gw, n % gw], z[:, n], f"token {n} on a {gh}x{gw} grid")


@contextlib.contextmanager
def tiny_unetr(n_layers, skip_step):
    """A UNETR-2D of a made-up ViT size: 16x16 input, P = 8 (K = 3 levels), D = 8, F = 2."""
    import unetr2d
    import vit
    name = f"exercise-{n_layers}-{skip_step}"
    vit.CONFIGS[name] = vit.ViTConfig(n_layers=n_layers, embed_dim=8, mlp_dim=8, n_heads=1, skip_step=skip_step)
    try:
        torch.manual_seed(0)
        yield unetr2d.UNETR2D(name, filters=2, img_size=16, patch_size=8).double().eval()
    finally:
        del vit.CONFIGS[name]


@behaviour(5, "vit_skip at level l reads hidden state S_m * l (1-based) and no other, out at H / 2^l")
def _():
    for n_layers, step in [(4, 1), (7, 3)]:
        with tiny_unetr(n_layers, step) as model, torch.no_grad():
            x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
            hidden = [torch.randn(2, 4, 8, dtype=torch.float64) for _ in range(n_layers)]
            for level in (1, 2):
                base = model.vit_skip(level, hidden, x)
                want = (2, 2 * 2**level, 16 // 2**level, 16 // 2**level)
                assert tuple(base.shape) == want, f"level {level}: shape {tuple(base.shape)}, expected {want}"
                read = [i + 1 for i in range(n_layers) if not torch.equal(
                    model.vit_skip(level, hidden[:i] + [hidden[i] + 1.0] + hidden[i + 1:], x), base)]
                assert read == [step * level], \
                    f"S_m = {step}, level {level} read layer(s) {read}, expected layer {step * level}"


@behaviour(5, "vit_skip at level 0 is the double block skips[0] on the raw input, (B, F, H, W)")
def _():
    with tiny_unetr(4, 1) as model, torch.no_grad():
        x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
        close(model.vit_skip(0, [torch.randn(2, 4, 8, dtype=torch.float64)] * 4, x), model.skips[0](x), "level 0")


@behaviour(5, "a blue block is a 2x2 stride-2 transpose conv, then conv 3x3 + ReLU (float64 reference)")
def _():
    import unetr2d
    block = randomise(unetr2d.BlueBlock(3, 2, batch_norm=False)).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    up = F.conv_transpose2d(x, block.up.weight, block.up.bias, stride=2)  # (B, 2, 8, 10)
    close(block(x), F.relu(F.conv2d(up, block.conv.conv.weight, block.conv.conv.bias, padding=1)), "output")


# ----- exercise 6: attention gate (Fig. 2.2)

def gate(mode="up", batch_norm=False):
    import unet
    g = randomise(unet.AttentionGate(3, batch_norm=batch_norm, mode=mode)).double().eval()
    if batch_norm:
        for norm in (g.skip_norm, g.up_norm, g.psi_norm):
            norm.running_mean.normal_(0, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    return g


def gate_reference(g, skip, up, batch_norm=False):
    def conv_norm(conv, norm, x):
        y = F.conv2d(x, conv.weight, conv.bias)
        return F.batch_norm(y, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=1e-3) \
            if batch_norm else y
    s = conv_norm(g.skip_proj, g.skip_norm, skip) + conv_norm(g.up_proj, g.up_norm, up)
    return torch.sigmoid(conv_norm(g.psi, g.psi_norm, F.relu(s)))  # (B, 1, H, W)


def skip_up(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) for _ in range(2)]


@behaviour(6, "alpha = sigmoid(psi(ReLU(W_skip skip + W_up up))), one coefficient per pixel (float64)")
def _():
    g, (skip, up) = gate(), skip_up()
    close(g.coefficients(skip, up), gate_reference(g, skip, up), "alpha")


@behaviour(6, "with batch_norm, a BatchNorm follows each 1x1 conv (eval mode, float64)")
def _():
    g, (skip, up) = gate(batch_norm=True), skip_up(1)
    close(g.coefficients(skip, up), gate_reference(g, skip, up, batch_norm=True), "alpha")


@behaviour(6, "mode 'up' rescales the upsampled decoder signal: up * alpha (code of [34])")
def _():
    g, (skip, up) = gate("up"), skip_up(2)
    close(g(skip, up), up * gate_reference(g, skip, up), "output")


@behaviour(6, "mode 'skip' rescales the encoder skip: skip * alpha (Oktay et al. [41])")
def _():
    g, (skip, up) = gate("skip"), skip_up(3)
    close(g(skip, up), skip * gate_reference(g, skip, up), "output")


@behaviour(6, "an Attention U-Net runs end to end and its gates learn (gradient reaches psi)")
def _():
    import unet
    torch.manual_seed(0)
    model = unet.AttentionUNet(filters=2, depth=2, dropout=0.0)
    out = model(torch.rand(2, 1, 8, 8))
    assert tuple(out.shape) == (2, 1, 8, 8), f"output shape {tuple(out.shape)}, expected (2, 1, 8, 8)"
    out.square().mean().backward()
    for i, g in enumerate(model.gates):
        assert g.psi.weight.grad is not None and g.psi.weight.grad.abs().sum() > 0, f"no gradient in gate {i}"


# ----- exercise 7: mirror padding to a multiple (§4.3.1)

@behaviour(7, "padding_for: -size % multiple in all, odd pixel first (768 -> 0 + 0, 1463 -> 37 + 36)")
def _():
    import data
    cases = {(768, 256): (0, 0), (1024, 256): (0, 0), (1463, 256): (37, 36), (1334, 256): (101, 101),
             (5, 16): (6, 5), (300, 128): (42, 42), (1, 1): (0, 0)}
    for (size, multiple), want in cases.items():
        got = tuple(int(v) for v in data.padding_for(size, multiple))
        assert got == want, f"padding_for({size}, {multiple}) = {got}, expected {want}"


@behaviour(7, "pad_to_multiple mirrors with the edge pixel repeated (d c b a | a b c d)")
def _():
    import data
    got = data.pad_to_multiple(np.array([[1, 2, 3]]), 6)
    want = np.array([[2, 1, 1, 2, 3, 3]] * 6)  # rows: 1 row -> 6, (3, 2) rows of padding, all copies of it
    close(got, want, "padded [[1, 2, 3]] to a multiple of 6", tol=0)
    got = data.pad_to_multiple(np.arange(4).reshape(2, 2), 5)
    want = np.array([[3, 2, 2, 3, 3], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1], [3, 2, 2, 3, 3], [3, 2, 2, 3, 3]])
    close(got, want, "padded [[0, 1], [2, 3]] to a multiple of 5", tol=0)


@behaviour(7, "leading axes and dtype are kept; H and W become multiples")
def _():
    import data
    stack = np.random.default_rng(0).integers(0, 256, (3, 5, 7)).astype(np.uint8)
    got = data.pad_to_multiple(stack, 4)
    assert got.dtype == np.uint8 and got.shape == (3, 8, 8), f"got {got.dtype} {got.shape}, expected uint8 (3, 8, 8)"
    for i in range(3):
        close(got[i], data.pad_to_multiple(stack[i], 4), f"slice {i} padded alone vs in the stack", tol=0)
        close(got[i, 2:7, 1:8], stack[i], f"slice {i} inside its padding", tol=0)


@behaviour(7, "a slice whose sides are already multiples comes back unchanged")
def _():
    import data
    image = np.random.default_rng(1).random((32, 48)).astype(np.float32)
    close(data.pad_to_multiple(image, 16), image, "padded 32x48 to a multiple of 16", tol=0)


@behaviour(7, "the tiles of a 300x500 slice reassemble its mirror-padded slice (extract_tiles)")
def _():
    import data
    image = np.random.default_rng(2).integers(0, 256, (1, 300, 500)).astype(np.uint8)
    tiles = data.extract_tiles(image, 256)
    assert tiles.shape == (4, 256, 256), f"{tiles.shape[0]} tiles of {tiles.shape[1:]}, expected 4 of 256x256"
    whole = tiles.reshape(2, 2, 256, 256).transpose(0, 2, 1, 3).reshape(512, 512)
    close(whole[106:406, 6:506], image[0], "centre of the reassembled slice", tol=0)
    close(whole[105::-1, 6:506], image[0, :106], "mirrored top rows", tol=0)


# ----- exercise 8: overlap-tile layout (Fig. 4.2-4.3)

LAYOUT_SIZES = [(384, 256), (320, 333), (129, 385), (100, 700)]


@behaviour(8, "Fig. 4.2: a side divisible by 128 gets 64 + 64 px of padding and side / 128 windows")
def _():
    import stitch
    for H, W in [(384, 256), (128, 512)]:
        tiles, padding = stitch.tile_layout(H, W)
        got = [tuple(int(v) for v in p) for p in padding]
        assert got == [(64, 64), (64, 64)], f"{H}x{W}: padding {got}, expected 64 + 64 on both axes"
        assert len(tiles) == (H // 128) * (W // 128), f"{H}x{W}: {len(tiles)} windows, expected {(H // 128) * (W // 128)}"


@behaviour(8, "Fig. 4.3: otherwise the least padding to a multiple of 128 (and 256), split evenly")
def _():
    import stitch
    for H, W in [(320, 333), (129, 385), (100, 700)]:
        tiles, padding = stitch.tile_layout(H, W)
        for size, (before, after) in zip((H, W), padding):
            want = max(256, math.ceil(size / 128) * 128) - size
            assert before + after == want and abs(before - after) <= 1, \
                f"{H}x{W}: side {size} padded {before} + {after}, expected {want} in all, split evenly"


@behaviour(8, "windows are 256 x 256 squares at stride 128, inside the padded image")
def _():
    import stitch
    for H, W in LAYOUT_SIZES:
        tiles, ((t, b), (l, r)) = stitch.tile_layout(H, W)
        for tile in tiles:
            top, left, bottom, right = tile.window
            assert (bottom - top, right - left) == (256, 256) and top % 128 == 0 and left % 128 == 0 \
                and top >= 0 and left >= 0 and bottom <= H + t + b and right <= W + l + r, \
                f"{H}x{W}: window {tile.window} is not a 256 square at stride 128 inside the padded image"


@behaviour(8, "every pixel is kept from exactly one window, never from padding")
def _():
    import stitch
    for H, W in LAYOUT_SIZES:
        tiles, ((t, _), (l, _)) = stitch.tile_layout(H, W)
        count = np.zeros((H, W), int)
        for tile in tiles:
            top, left, bottom, right = tile.kept
            count[top:bottom, left:right] += 1
            dy, dx = tile.offset  # the kept block, in window coordinates, must lie in the window ...
            assert 0 <= dy and 0 <= dx and dy + bottom - top <= 256 and dx + right - left <= 256, \
                f"{H}x{W}: kept {tile.kept} at offset {tile.offset} leaves its window"
            assert (top + t, left + l) == (tile.window[0] + dy, tile.window[1] + dx), \
                f"{H}x{W}: offset {tile.offset} does not place kept {tile.kept} in window {tile.window}"
        assert count.min() == 1 and count.max() == 1, f"{H}x{W}: pixels kept {count.min()} to {count.max()} times"


@behaviour(8, "relevant patches are the 128 x 128 window centres, grown only toward the image border")
def _():
    import stitch
    for H, W in [(640, 333), (320, 129)]:
        for tile in stitch.tile_layout(H, W)[0]:
            top, left, bottom, right = tile.kept
            for lo, hi, size, off in ((top, bottom, H, tile.offset[0]), (left, right, W, tile.offset[1])):
                # a side inside the image is an edge of the window's centre, [64, 192) in the window
                assert (lo == 0 or off == 64) and (hi == size or off + hi - lo == 192), \
                    f"{H}x{W}: kept {tile.kept} at offset {tile.offset} in window {tile.window}"


@behaviour(8, "predict_tiled of the identity gives the image back exactly (any size, other windows too)")
def _():
    import stitch
    for H, W, window, keep in [(384, 256, 256, 128), (320, 333, 256, 128), (50, 70, 256, 128),
                               (100, 70, 64, 32), (31, 97, 32, 8), (40, 33, 16, 16)]:
        image = np.random.default_rng(H).random((H, W), dtype=np.float32)
        out = stitch.predict_tiled(lambda batch: batch.copy(), image, window=window, keep=keep)
        close(out, image, f"{H}x{W} round trip, window {window}, keep {keep}", tol=0)


# ----- exercise 9: IoU_F and Dice (Eq. 4.1-4.2)

def hand_masks():
    mask, pred = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    mask[0] = True  # 4 foreground pixels; 3 found, 3 false positives, 1 missed
    pred[0, 1:], pred[1, :3] = True, True
    return pred, mask


@behaviour(9, "IoU_F = TP / (TP + FP + FN) and Dice = 2TP / (2TP + FP + FN) from the counts")
def _():
    import evaluate
    for (tp, fp, fn), iou, dice in [((3, 3, 1), 3 / 7, 6 / 10), ((5, 0, 0), 1.0, 1.0), ((0, 4, 2), 0.0, 0.0),
                                    ((10, 0, 30), 0.25, 0.4)]:
        got = evaluate.iou_from_counts(tp, fp, fn), evaluate.dice_from_counts(tp, fp, fn)
        assert np.allclose(got, (iou, dice)), f"counts {tp, fp, fn}: IoU_F, Dice = {got}, expected {iou:.4f}, {dice:.4f}"


@behaviour(9, "an empty prediction of an empty mask scores 1, from counts and from masks")
def _():
    import evaluate
    empty = np.zeros((4, 4), bool)
    got = [evaluate.iou_from_counts(0, 0, 0), evaluate.dice_from_counts(0, 0, 0),
           evaluate.iou_foreground(empty, empty), evaluate.dice_coefficient(empty, empty)]
    assert got == [1.0] * 4, f"got {got}, expected 1 each"


@behaviour(9, "on hand-drawn masks: IoU_F 3/7 and Dice 6/10")
def _():
    import evaluate
    got = evaluate.iou_foreground(*hand_masks()), evaluate.dice_coefficient(*hand_masks())
    assert np.allclose(got, (3 / 7, 6 / 10)), f"IoU_F, Dice = {got}, expected 0.4286, 0.6000"


@behaviour(9, "true negatives do not count: more background leaves IoU_F and Dice unchanged")
def _():
    import evaluate
    pred, mask = (np.pad(m, ((0, 36), (0, 36))) for m in hand_masks())
    got = evaluate.iou_foreground(pred, mask), evaluate.dice_coefficient(pred, mask)
    assert np.allclose(got, (3 / 7, 6 / 10)), f"with 1584 more background pixels IoU_F, Dice = {got}, expected 0.4286, 0.6000"


@behaviour(9, "Dice = 2 IoU_F / (1 + IoU_F) on random masks")
def _():
    import evaluate
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, mask = rng.random((2, 20, 20)) < rng.random()
        iou, dice = evaluate.iou_foreground(pred, mask), evaluate.dice_coefficient(pred, mask)
        assert abs(dice - 2 * iou / (1 + iou)) < 1e-12, f"IoU_F {iou:.4f} but Dice {dice:.4f}"


@behaviour(9, "evaluate_stack: per-slice mean (the thesis's number) and pooled IoU_F")
def _():
    import evaluate
    big, small = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    big[:5], small[0, :2] = True, True  # 50 px found exactly; 2 px, one found
    found = small.copy()
    found[0, 1] = False
    r = evaluate.evaluate_stack([big.astype(np.float32), found.astype(np.float32)], [big, small])
    got = r["test_iou_f"], r["test_iou_f_global"]
    assert np.allclose(got, (0.75, 51 / 52)), f"per-slice mean, pooled = {got}, expected 0.75, {51 / 52:.4f}"


# ----- exercise 10: two degradations (§3.3)

@behaviour(10, "gaussian_noise: per-pixel N(0, 0.15 * 255), rounded (mean 0, std 38.25, uncorrelated)")
def _():
    import degrade
    image = np.full((512, 512), 128, np.uint8)
    noise = degrade.gaussian_noise(image, np.random.default_rng(0)).astype(np.float64) - 128
    assert abs(noise.std() - 38.25) < 0.5, f"noise std {noise.std():.2f}, expected 38.25"
    assert abs(noise.mean()) < 0.3, f"noise mean {noise.mean():.3f}, expected 0 (round, do not truncate)"
    r = np.corrcoef(noise[:, 1:].ravel(), noise[:, :-1].ravel())[0, 1]
    assert abs(r) < 0.02, f"neighbouring pixels correlate ({r:.3f}): draw the noise once per pixel"


@behaviour(10, "gaussian_noise: clips to [0, 255] instead of wrapping around")
def _():
    import degrade
    for level, ok in ((255, lambda out: out.min() >= 40), (0, lambda out: out.max() <= 215)):
        out = degrade.gaussian_noise(np.full((128, 128), level, np.uint8), np.random.default_rng(1))
        assert out.dtype == np.uint8 and ok(out), f"an image of {level} gave values {out.min()} to {out.max()}"


@behaviour(10, "gaussian_noise and cutout are pure: input unchanged, uint8 out, same seed same result")
def _():
    import degrade
    image = np.random.default_rng(2).integers(0, 256, (64, 48)).astype(np.uint8)
    for fn in (degrade.gaussian_noise, degrade.cutout):
        keep = image.copy()
        a, b = fn(image, np.random.default_rng(3)), fn(image, np.random.default_rng(3))
        assert np.array_equal(image, keep), f"{fn.__name__} changed its input"
        assert a.dtype == np.uint8 and a.shape == image.shape, f"{fn.__name__}: {a.dtype} {a.shape} out"
        assert np.array_equal(a, b), f"{fn.__name__}: the same seed gave different results"


@behaviour(10, "cutout: one box is round(0.2 H) x round(0.2 W), cut off where it leaves the image")
def _():
    import degrade
    image, inner = np.full((50, 40), 200, np.uint8), 0
    for seed in range(60):
        cut = degrade.cutout(image, np.random.default_rng(seed), n_min=1, n_max=1) == 0
        rows, cols = np.nonzero(cut)
        assert len(rows), f"seed {seed}: nothing was cut"
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert cut[top:bottom, left:right].all() and cut.sum() == (bottom - top) * (right - left), \
            f"seed {seed}: the cut is not one rectangle"
        assert bottom - top <= 10 and right - left <= 8, f"seed {seed}: box {bottom - top}x{right - left}, over 10x8"
        if top > 0 and left > 0 and bottom < 50 and right < 40:
            assert (bottom - top, right - left) == (10, 8), f"seed {seed}: inner box {bottom - top}x{right - left}"
            inner += 1
    assert inner >= 20, f"only {inner} of 60 boxes lie inside the image: centres must be uniform over it"


@behaviour(10, "cutout: 1 to 5 boxes (both ends occur), filled with `fill`, the rest unchanged")
def _():
    import degrade
    image, counts = np.full((400, 400), 200, np.uint8), set()
    for seed in range(100):
        out = degrade.cutout(image, np.random.default_rng(seed), size=0.05, fill=7)
        assert set(np.unique(out)) <= {7, 200}, f"seed {seed}: values other than the image and the fill"
        counts.add(int(round((out == 7).sum() / 400)))  # boxes of 20 x 20 rarely overlap
    assert min(counts) <= 1 and max(counts) == 5, f"box counts seen {sorted(counts)}, expected 1 to 5"


# ----- exercise 11: histogram matching (App. A)

def hist(image):
    return np.bincount(image.ravel(), minlength=256) / image.size


@behaviour(11, "matching an image to its own histogram is the identity")
def _():
    import degrade
    image = (np.random.default_rng(0).integers(0, 60, (40, 50)) * 4 + 3).astype(np.uint8)  # gaps between levels
    close(degrade.match_histogram(image, hist(image)), image, "image matched to itself", tol=0)


@behaviour(11, "the matched image's CDF follows the target's (within 0.02), the map is monotone")
def _():
    import degrade
    source = np.random.default_rng(1).integers(0, 256, (128, 128)).astype(np.uint8)
    target = np.zeros(256)
    target[30:201] = np.minimum(np.arange(171), np.arange(171)[::-1]) + 1.0  # a triangle
    target /= target.sum()
    out = degrade.match_histogram(source, target)
    assert out.dtype == np.uint8 and out.shape == source.shape, f"{out.dtype} {out.shape} out"
    gap = np.max(np.abs(np.cumsum(hist(out)) - np.cumsum(target)))
    assert gap < 0.02, f"CDFs differ by up to {gap:.3f}"
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0), "a darker level was mapped above a brighter one"


@behaviour(11, "the output stays within the target's levels and the input is unchanged")
def _():
    import degrade
    source = np.random.default_rng(2).integers(0, 256, (64, 64)).astype(np.uint8)
    keep, target = source.copy(), np.zeros(256)
    target[[90, 100, 140]] = [0.2, 0.5, 0.3]
    out = degrade.match_histogram(source, target)
    assert np.array_equal(source, keep), "the input was changed"
    assert out.min() >= 90 and out.max() <= 140, f"values {out.min()} to {out.max()}, target levels 90 to 140"


@behaviour(11, "fix_zero_peak: padding stays 0 and the tissue matches as if there were no padding")
def _():
    import degrade
    tissue = np.random.default_rng(3).integers(30, 220, (40, 60)).astype(np.uint8)  # no 0, 1 or 2: zero count 0
    target = np.zeros(256)
    target[60:250] = 1 / 190
    out = degrade.match_histogram(np.pad(tissue, 20), target, fix_zero_peak=True)
    assert np.all(out[:20] == 0) and np.all(out[-20:] == 0), "zero padding did not stay 0"
    close(out[20:-20, 20:-20], degrade.match_histogram(tissue, target), "tissue matched with padding and fix", tol=0)


# ----- exercise 12: the training losses (App. A Eq. 1)

def loss_args(**kw):
    return {"loss": "bce", "pretext": False, "alpha": 0.5, **kw}


def batch(seed=0):
    """(logits, reconstruction in (0, 1), x, y) of shape (2, 1, 4, 4), float64."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    rec, x = torch.rand(2, 2, 1, 4, 4, generator=g, dtype=torch.float64)
    y = (torch.rand(2, 1, 4, 4, generator=g) < 0.4).double()
    return z.requires_grad_(True), rec.requires_grad_(True), x, y


def bce(z, y):  # closed form on probabilities, float64
    p = torch.sigmoid(z)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


@behaviour(12, "segmentation: BCE on the logits; its gradient is (sigmoid(z) - y) / n")
def _():
    import train
    z, _, x, y = batch()
    loss = train.compute_loss(z, x, y, **loss_args())
    close(loss, bce(z, y), "loss")
    close(torch.autograd.grad(loss, z)[0], (torch.sigmoid(z) - y) / z.numel(), "gradient w.r.t. the logits")


@behaviour(12, "bce_dice adds the Dice loss 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) (App. B)")
def _():
    import train
    z, _, x, y = batch(1)
    p = torch.sigmoid(z)
    want = bce(z, y) + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    close(train.compute_loss(z, x, y, **loss_args(loss="bce_dice")), want, "loss")


@behaviour(12, "pretext: MSE between sigmoid(logits) and the clean image (§5.3)")
def _():
    import train
    z, _, x, _ = batch(2)
    clean = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    close(train.compute_loss(z, x, clean, **loss_args(pretext=True)),
          ((torch.sigmoid(z) - clean) ** 2).mean(), "loss")


@behaviour(12, "Attention Y-Net: alpha * MSE(reconstruction, x) + (1 - alpha) * BCE(segmentation, y)")
def _():
    import train
    z, rec, x, y = batch(3)
    for alpha in (0.3, 0.98):
        close(train.compute_loss((z, rec), x, y, **loss_args(alpha=alpha)),
              alpha * ((rec - x) ** 2).mean() + (1 - alpha) * bce(z, y), f"loss at alpha {alpha}")


@behaviour(12, "Attention Y-Net: alpha = 1 trains only the reconstruction, alpha = 0 only the segmentation")
def _():
    import train
    z, rec, x, y = batch(4)
    for alpha, idle in ((1.0, z), (0.0, rec)):
        loss = train.compute_loss((z, rec), x, y, **loss_args(alpha=alpha))
        g = torch.autograd.grad(loss, idle, allow_unused=True)[0]
        assert g is None or g.abs().max() == 0, f"alpha {alpha}: the {'segmentation' if idle is z else 'reconstruction'} still gets a gradient"


@behaviour(12, "Attention Y-Net: an unlabelled sample (mask -1) adds a BCE of 0 and no segmentation gradient")
def _():
    import train
    z, rec, x, y = batch(6)
    y[1] = -1.0  # sample 1 has no label (a target-domain image, App. A)
    loss = train.compute_loss((z, rec), x, y, **loss_args(alpha=0.3))
    close(loss, 0.3 * ((rec - x) ** 2).mean() + 0.7 * bce(z[:1], y[:1]) / 2, "loss (BCE of sample 0, over 2 samples)")
    grad = torch.autograd.grad(loss, z)[0]
    assert grad[1].abs().max() == 0, "the unlabelled sample sends a gradient to the segmentation"


@behaviour(12, "Attention Y-Net pretext: MSE between the reconstruction and the clean target")
def _():
    import train
    z, rec, x, _ = batch(5)
    clean = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    close(train.compute_loss((z, rec), x, clean, **loss_args(pretext=True)), ((rec - clean) ** 2).mean(), "loss")


# ---------------------------------------------------------------- command line

def show(numbers):
    wrap = dict(width=100, initial_indent="    ", subsequent_indent="    ")
    for n in numbers:
        e = BY_NUMBER[n]
        where = "; ".join(f"{path}: {name}" for path, name in e.targets)
        print(f"{e.number:2d}. {e.title}  [{e.thesis}]\n    {where}")
        print(textwrap.fill("Task: " + e.task, **wrap))
        print(textwrap.fill("Hint: " + e.hint, **wrap) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_grade"]:  # the fresh process that `check` starts
        return grade([int(n) for n in argv[1].split(",")], argv[2])
    p = argparse.ArgumentParser(description="Course exercises in the real code of this project, graded by "
                                "tests of behaviour.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="show the exercises: thesis reference, file and function, task, hint")
    ls.add_argument("numbers", nargs="?", default="all", help="e.g. 3 or 1,4,7 (default: all)")
    mk = sub.add_parser("make", help="write a student copy with the chosen exercises blanked")
    mk.add_argument("dir", help="a new or empty folder outside this project")
    mk.add_argument("--only", default="all", help="exercise numbers, e.g. 1,4,7 (default: all)")
    ck = sub.add_parser("check", help="grade exercises against a project folder, one line per behaviour")
    ck.add_argument("numbers", help="e.g. 3, 1,4,7 or all")
    ck.add_argument("--dir", default=HERE, help="the project or copy to grade (default: this one)")
    args = p.parse_args(argv)
    try:
        if args.command == "list":
            return show(parse_numbers(args.numbers, "list"))
        if args.command == "make":
            numbers = parse_numbers(args.only, "--only")
            out = make(args.dir, numbers)
            print(f"wrote {out}: exercises {', '.join(map(str, numbers))} blanked; hand it out, then grade with "
                  f"python exercises.py check N --dir {args.dir}")
            return 0
        return check(parse_numbers(args.numbers, "check"), args.dir)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
