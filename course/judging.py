"""The course kit's shared judging code: records, checks, probes, and how a check judges an answer.

Thesis: the exercises follow chapters 2-4 and Appendix A (§2.2.1.1 attention to App. A Eq. 1); each
file beside this one holds one exercise: its record, its probes, its references and its checks.

A check runs in the grading process and never imports the graded code. It draws seeded inputs over
the domain the exercise's task and the project's callers allow, asks a probe to run the graded
function on them in another process (`g.run(probe, ...)`: only values cross, as arrays and JSON),
and compares what comes back with a reference (`g.expect(reference, ...)`), torch's own operators or
a closed form. A @reference is withheld from a student copy, whose checks read the answers the
instructor's kit recorded instead; a check with hidden=True is left out of the copy.

Tolerances come from precision (`tolerance`): the float32 arithmetic the task allows must pass on
float32 and float64 inputs, bf16 where the project runs the code under --amp. Statistics of a
stochastic function are judged with bounds that a correct body exceeds with probability below
DELTA on any seed (`hoeffding`, `gaussian_bound`).
Shapes: B batch, h heads, N tokens, d head width, D hidden size, C channels, H x W image, P patch.
"""
import contextlib
import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    thesis: str
    targets: tuple  # ((file, qualified function name), ...), all blanked together
    objective: str
    minutes: int  # a student's estimated time, checkpoint questions included
    task: str
    hints: tuple  # (a nudge, the key idea)
    questions: tuple  # checkpoint questions, each on a result of the thesis
    withheld: tuple = ()  # ((test file, helper), ...): the project's test references that would solve it
    budget_s: float = 60.0  # wall-clock seconds for all its checks, a fresh process's start included


def check(behaviour, points=1, hidden=False):
    """Mark fn(g) as a check: it returns on success and raises AssertionError naming the input if not."""
    def mark(fn):
        fn.check = (behaviour, points, hidden)
        return fn
    return mark


def probe(fn):
    """Mark a probe: it runs in the process that imports the graded code, on the grader's inputs."""
    fn.is_probe = True
    return fn


def reference(fn):
    """Mark a grader-side reference, withheld from student copies (their checks read recorded answers)."""
    fn.is_reference = True
    return fn


# ---------------------------------------------------------------- judging (the grading process)

def describe(x):
    """What came back, in words: 'an array of shape (2, 3)', 'a tuple of 2', 'an int', 'None'."""
    if isinstance(x, np.ndarray):
        return f"an array of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    name = getattr(x, "type_name", type(x).__name__)  # grader.Opaque: what could not cross as data
    return "None" if x is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def array(x, what, shape=None, where=""):
    """x as a float64 array; AssertionError naming `what` (on `where`) if it is not an array of `shape`."""
    on = f" on {where}" if where else ""
    if torch.is_tensor(x):
        x = x.detach().double().numpy()
    assert isinstance(x, np.ndarray) and x.dtype.kind in "biuf", \
        f"{what}{on}: got {describe(x)}, expected a tensor or array"
    assert shape is None or tuple(x.shape) == tuple(shape), \
        f"{what}{on}: shape {tuple(x.shape)}, expected {tuple(shape)}"
    return x.astype(np.float64)


# Allowed error per unit of magnitude. float64 and float32 inputs: the float32 arithmetic the tasks
# allow, 256 roundings of 2^-24 (a sum of a few hundred products, a softmax, a norm); bf16 under
# --amp: 8 roundings of 2^-8. A mistake in what is computed is off by far more (0.01 to 1).
TOLERANCE = {"float64": 2.0**-16, "float32": 2.0**-16, "bfloat16": 2.0**-5}


def tolerance(dtype, scale=1.0):
    """The allowed error for results of magnitude `scale` computed from inputs of `dtype`."""
    return TOLERANCE[str(dtype).replace("torch.", "")] * max(1.0, scale)


def close(got, want, what, where, tol=0.0, floor=1.0):
    """AssertionError naming `what` and the input `where` unless got has want's shape and agrees
    within tol times max(floor, the largest |want|); the message says by how much it is off."""
    want = array(want, "reference")
    got = array(got, what, want.shape, where)
    if not np.isfinite(got).all() and np.isfinite(want).all():
        raise AssertionError(f"{what} on {where}: holds NaN or inf")
    allowed = tol * max(floor, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got - want).max()) if got.size else 0.0
    if err > allowed:
        raise AssertionError(f"{what} on {where}: off by up to {err:.3g} (allowed {allowed:.2g})")


def pair(x, what, where):
    assert isinstance(x, (tuple, list)) and len(x) == 2, f"on {where}: expected {what}, got {describe(x)}"
    return x


def grads_close(got, want, where, tol):
    """Gradients {name: array} against the reference's; a missing one is named."""
    got = got or {}
    for name, w in want.items():
        g = got.get(name)
        assert g is not None, f"gradient of {name} on {where}: none reached it"
        close(g, w, f"gradient of {name}", where, tol)


# ---------------------------------------------------------------- statistics of stochastic functions

DELTA = 1e-9  # the chance a correct body fails one statistic, on any seed


def hoeffding(n, span=1.0, delta=DELTA):
    """Bound t with P(|mean - E| >= t) <= delta for the mean of n independent values in a range `span`
    (Hoeffding: 2 exp(-2 n t^2 / span^2) = delta)."""
    return span * math.sqrt(math.log(2 / delta) / (2 * n))


def gaussian_bound(n, sd, delta=DELTA):
    """Bound t with P(|mean - E| >= t) <= delta for the mean of n independent N(., sd^2) values."""
    return sd * math.sqrt(2 * math.log(2 / delta) / n)


def agree(got, want, bound, what, where):
    """AssertionError unless a statistic is within `bound` of the reference's."""
    assert abs(got - want) <= bound, \
        f"{what} on {where}: {got:.4g}, the reference's {want:.4g} (allowed {bound:.2g} by the sample size)"


# ---------------------------------------------------------------- inputs

def seeded(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, std=1.0, dtype=torch.float64):
    return (std * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def weights_of(shapes, seed, std=0.5):
    """{name: tensor} drawn from N(0, std) in float64: the grader's weights for a module."""
    g = seeded(seed)
    return {name: randn(g, *shape, std=std) for name, shape in shapes.items()}


def batch_norm_stats(state, prefix, channels, seed):
    """Random affine and running statistics of a BatchNorm, so that skipping it changes the output."""
    g = seeded(seed)
    state[f"{prefix}.weight"] = 1 + randn(g, channels, std=0.3)
    state[f"{prefix}.bias"] = randn(g, channels, std=0.3)
    state[f"{prefix}.running_mean"] = randn(g, channels, std=0.5)
    state[f"{prefix}.running_var"] = 0.5 + torch.rand(channels, generator=g, dtype=torch.float64)
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(10)
    return state


def cast(tree, dtype):
    """Every floating tensor of a {name: tensor} state or a list, in `dtype`."""
    if isinstance(tree, dict):
        return {k: cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cast(v, dtype) for v in tree)
    return tree.to(dtype) if torch.is_tensor(tree) and tree.is_floating_point() else tree


# ---------------------------------------------------------------- probing (the graded code's process)

def target(path):
    """'module.function' or 'module.Class.method' of the graded folder."""
    module, *names = path.split(".")
    obj = importlib.import_module(module)
    for name in names:
        obj = getattr(obj, name)
    return obj


def load(module, state, dtype=torch.float64):
    """The grader's weights into a module of the graded code (every key must fit), in `dtype`."""
    module.to(dtype).load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    return module


@contextlib.contextmanager
def replaced(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def autocast(amp):
    """bf16 autocast on the CPU, as --amp runs the models; a no-op context when amp is false."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(amp))


def weighted(value):
    """sum(value * cos(index)): the scalar whose gradients the checks compare (fixed weights of both
    signs, so that no two gradients cancel by symmetry, as they would for sum(value))."""
    weights = torch.cos(torch.arange(value.numel(), dtype=torch.float64)).view(value.shape)
    return (value * weights.to(value.dtype)).sum()


def reference_gradients(fn, inputs, state):
    """{name: gradient of weighted(fn(state, *inputs))} in float64 for every input and every weight of
    `state` (a BatchNorm's running statistics are no weights): a reference's gradients, grader-side."""
    inputs = {k: v.double().clone().requires_grad_(True) for k, v in inputs.items()}
    weights = {k: v.double().clone().requires_grad_(True) for k, v in state.items()
               if v.is_floating_point() and "running" not in k}
    leaves = {**inputs, **weights}
    out = fn({**state, **weights}, *inputs.values())
    return dict(zip(leaves, torch.autograd.grad(weighted(out), list(leaves.values()))))


def gradients(value, named):
    """{name: gradient of weighted(value)} for {name: tensor}; None where none reached it."""
    if not torch.is_tensor(value) or not value.requires_grad:
        return None
    names = list(named)
    grads = torch.autograd.grad(weighted(value), [named[n] for n in names], allow_unused=True)
    return dict(zip(names, grads))


@probe
def call(path, args=(), kwargs=None):
    """The graded function at `path` on the grader's arguments; its result as it is."""
    return {"result": target(path)(*args, **(kwargs or {}))}


def raised_by(fn, *args, **kwargs):
    """{"raised": the name of the exception fn raises on these arguments, or None if it returns}."""
    try:
        fn(*args, **kwargs)
    except NotImplementedError as exc:
        if str(exc).startswith("exercise "):
            raise  # a blank body: reported as not written yet
        return {"raised": "NotImplementedError"}
    except Exception as exc:  # noqa: BLE001 - which exception is the answer
        return {"raised": type(exc).__name__}
    return {"raised": None}
