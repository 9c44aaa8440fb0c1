"""The course kit's content: twelve exercises, each a record followed by the checks that grade it.

Thesis: one exercise per block of chapters 2-4 and Appendix A, from Eq. 2.1 (attention) to App. A
Eq. 1 (the Attention Y-Net loss). A record names its section, equation, figure or table, a learning
objective, the minutes it takes, the task, two levels of hints and checkpoint questions on results
of the thesis; `exercises.py` is the tool that lists, blanks, checks and grades them.

A check runs in the grading process and never imports the graded code. It chooses its inputs (all
seeded, so a message reads the same on every run), asks a probe to run the graded function on them
in another process (`g.run(probe, ...)`: only values cross, as arrays and JSON), and judges what
comes back against torch's own operators, closed forms or a reference (`g.expect(reference, ...)`).
A @reference is withheld from a student copy, whose checks read the answers the instructor's kit
recorded instead; a check with hidden=True is left out of the copy and runs only when the instructor
grades. A probe runs beside the graded code: it builds the project's objects with the grader's
weights and puts stand-ins built on torch's operators in place of other exercises' code, so that each
exercise is graded on its own.
Shapes: B batch, h heads, N tokens, d head width, D hidden size, C channels, H x W image, P patch.
"""
import contextlib
import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


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
    tests: tuple  # node-id patterns of the project's own tests of this code (pytest -m exN)
    budget_s: float = 60.0  # wall-clock seconds for all its checks, a fresh process's start included


@dataclass(frozen=True)
class Check:
    exercise: int
    behaviour: str
    points: int
    hidden: bool
    fn: object

    @property
    def name(self):
        return self.fn.__name__


EXERCISES, CHECKS, PROBES = {}, {}, {}


def exercise(number, **fields):
    EXERCISES[number] = Exercise(number, **fields)


def check(number, behaviour, points=1, hidden=False):
    """Register fn(g) as a check of exercise `number`: it returns on success, raises AssertionError if not."""
    def register(fn):
        assert all(c.name != fn.__name__ for cs in CHECKS.values() for c in cs), fn.__name__
        CHECKS.setdefault(number, []).append(Check(number, behaviour, points, hidden, fn))
        return fn
    return register


def probe(fn):
    """Register a probe: it runs in the process that imports the graded code, on the grader's inputs."""
    PROBES[fn.__name__] = fn
    return fn


def reference(fn):
    """Mark a grader-side reference, withheld from student copies (their checks read recorded answers)."""
    fn.is_reference = True
    return fn


# ---------------------------------------------------------------- judging (the grading process)

class Opaque:
    """A value the graded code returned that cannot cross as data: only its type name does."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name}>"


def describe(x):
    """What came back, in words: 'an array of shape (2, 3)', 'a tuple of 2', 'an int', 'None'."""
    if isinstance(x, np.ndarray):
        return f"an array of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    name = x.type_name if isinstance(x, Opaque) else type(x).__name__
    return "None" if x is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def array(x, what, shape=None):
    """x as a float64 array; AssertionError naming `what` if it is not an array (of `shape`)."""
    if torch.is_tensor(x):
        x = x.detach().numpy()
    assert isinstance(x, np.ndarray), f"{what}: got {describe(x)}, expected a tensor or array"
    assert shape is None or tuple(x.shape) == tuple(shape), \
        f"{what}: shape {tuple(x.shape)}, expected {tuple(shape)}"
    return x.astype(np.float64)


def close(got, want, what, tol=1e-6):
    """AssertionError naming `what` unless got has want's shape and agrees within tol (relative above 1)."""
    want = array(want, "reference")
    got = array(got, what, want.shape)
    if not np.isfinite(got).all() and np.isfinite(want).all():
        raise AssertionError(f"{what}: holds NaN or inf")
    diff = float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max()) if got.size else 0.0
    if diff > tol:
        hint = " (an error this small is rounding: compute in the inputs' dtype)" if diff < 1e-4 else ""
        raise AssertionError(f"{what}: off by up to {diff:.3g}{hint}")


def pair(x, what="(output, weights)"):
    assert isinstance(x, (tuple, list)) and len(x) == 2, f"expected {what}, got {describe(x)}"
    return x


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, std=1.0):
    return std * torch.randn(*shape, generator=g, dtype=torch.float64)


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


# ---------------------------------------------------------------- probing (the graded code's process)

def target(path):
    """'module.function' or 'module.Class.method' of the graded folder."""
    module, *names = path.split(".")
    obj = importlib.import_module(module)
    for name in names:
        obj = getattr(obj, name)
    return obj


def load(module, state):
    """The grader's weights into a module of the graded code (float64, every key must fit)."""
    module.double().load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    return module


@contextlib.contextmanager
def replaced(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


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


# ================================================================ 1. scaled dot-product attention

exercise(
    1, title="Scaled dot-product attention", thesis="§2.2.1.1, Eq. 2.1, Fig. 2.4 (left)",
    targets=(("attention.py", "scaled_dot_product_attention"),),
    objective="Compute Eq. 2.1 for all heads at once with batched matrix products, and explain why the "
              "scores are divided by sqrt(d_k) before the softmax.",
    minutes=20,
    task="Given per-head queries, keys and values of shape (B, h, N, d), return softmax(QK^T / sqrt(d_k)) V "
         "and the attention weights. The scale 1/sqrt(d_k) keeps the softmax from saturating. The weights "
         "are returned before dropout (every row sums to 1); when `training` and `dropout` > 0 the output is "
         "computed from the dropped-out, rescaled weights, as in Vaswani et al. [7].",
    hints=("Eq. 2.1 is three steps: scores, softmax, product with V. Which axis of the scores belongs to "
           "the keys, the axis over which each query's weights must sum to 1?",
           "Swap the last two axes of k to get (B, h, N, N) scores from one batched product; torch.softmax "
           "on the keys' axis is numerically stable for large scores; F.dropout(weights, p, training) does "
           "nothing outside training, and scales the kept weights by 1 / (1 - p) inside it."),
    questions=("§2.2.1.1 scales the scores so that the softmax does not give 'extremely small gradients'. "
               "For q and k with independent unit-variance entries, what is the standard deviation of q.k "
               "when d_k = 64, the full head width of UNETR-2D Mini (D = 64, Table 5.3), and after the "
               "division by sqrt(d_k)?",
               "§2.2.4 gives self-attention a cost of O(n^2 d) per layer. How many scores does one head "
               "compute for a 256 x 256 input with the thesis's 16 x 16 patches, and how many with 8 x 8 "
               "patches?"),
    tests=("tests/test_attention.py::*",),
)


def qkv(B=2, h=3, N=5, d=4, d_v=3, scale=1.0, seed=0, dtype=torch.float64, n_keys=None):
    g = seeded(seed)
    n_keys = N if n_keys is None else n_keys
    q = scale * torch.randn(B, h, N, d, generator=g, dtype=torch.float64)
    k, v = (scale * torch.randn(B, h, n_keys, n, generator=g, dtype=torch.float64) for n in (d, d_v))
    return [t.to(dtype) for t in (q, k, v)]


@probe
def sdpa(q, k, v, dropout=0.0, training=False, seed=0, grad_out=None):
    """attention.scaled_dot_product_attention; with grad_out, the gradients of sum(out * grad_out)."""
    import attention
    for t in (q, k, v):
        t.requires_grad_(grad_out is not None)
    torch.manual_seed(seed)
    result = attention.scaled_dot_product_attention(q, k, v, dropout, training)
    answer = {"result": result}
    if grad_out is not None and isinstance(result, tuple) and torch.is_tensor(result[0]):
        answer["grads"] = torch.autograd.grad((result[0] * grad_out).sum(), (q, k, v), allow_unused=True)
    return answer


@check(1, "returns the output (B, h, N, d_v) and the weights (B, h, N, N)")
def sdpa_shapes(g):
    q, k, v = qkv()
    out, weights = pair(g.run(sdpa, q=q, k=k, v=v)["result"])
    array(out, "output", (2, 3, 5, 3))
    array(weights, "weights", (2, 3, 5, 5))


@check(1, "output equals torch's F.scaled_dot_product_attention (float64)", points=2)
def sdpa_matches_torch(g):
    q, k, v = qkv(d=7, seed=1)
    out, _ = pair(g.run(sdpa, q=q, k=k, v=v)["result"])
    close(out, F.scaled_dot_product_attention(q, k, v), "output vs torch")


@check(1, "scores are scaled by 1/sqrt(d_k) (Eq. 2.1)", points=2)
def sdpa_scale(g):
    d = 9  # one query, two keys: the weight of key 1 is sigmoid((q.k1 - q.k2) / sqrt(d)) = sigmoid(6 / 3)
    q, k = torch.zeros(1, 1, 1, d, dtype=torch.float64), torch.zeros(1, 1, 2, d, dtype=torch.float64)
    q[..., 0], k[0, 0, 0, 0] = 1.0, 6.0
    _, weights = pair(g.run(sdpa, q=q, k=k, v=torch.eye(2, dtype=torch.float64).view(1, 1, 2, 2))["result"])
    w = array(weights, "weights", (1, 1, 1, 2))[0, 0, 0]
    assert abs(w.sum() - 1) < 1e-6 and (w > 0).all(), \
        "the weights of one query do not sum to 1 over the keys, so no scale can be read off them " \
        "(see the softmax check)"
    used = math.log(w[0] / w[1]) / 6.0
    assert abs(used - 1 / 3) < 1e-6, \
        f"the scores were multiplied by {used:.4g}; Eq. 2.1 divides them by sqrt(d_k) = sqrt(9) = 3"


@check(1, "every row of weights is a softmax over the keys: non-negative, sums to 1, finite for large scores")
def sdpa_softmax_rows(g):
    q, k, v = qkv(d=16, scale=30.0, seed=2, dtype=torch.float32)  # scores in the thousands: exp overflows
    weights = array(pair(g.run(sdpa, q=q, k=k, v=v)["result"])[1], "weights", (2, 3, 5, 5))
    assert np.isfinite(weights).all() and (weights >= 0).all(), "weights hold NaN, inf or negative values " \
        "(a bare exp overflows in float32: subtract each row's maximum, or use torch.softmax)"
    if np.allclose(weights.sum(-2), 1, atol=1e-5) and not np.allclose(weights.sum(-1), 1, atol=1e-5):
        raise AssertionError("each column sums to 1: the softmax runs over the queries (dim -2); Eq. 2.1 "
                             "normalises each query's scores over the keys (dim -1)")
    close(weights.sum(-1), np.ones((2, 3, 5)), "row sums", tol=1e-5)


@check(1, "identical keys give uniform weights and the mean of the values")
def sdpa_identical_keys(g):
    q, k, v = qkv(N=6, seed=3)
    k = k[:, :, :1].expand_as(k).contiguous()
    out, weights = pair(g.run(sdpa, q=q, k=k, v=v)["result"])
    close(weights, np.full((2, 3, 6, 6), 1 / 6), "weights")
    close(out, v.mean(dim=2, keepdim=True).expand(2, 3, 6, 3), "output")


@check(1, "gradients with respect to q, k and v equal torch's (float64)", points=2)
def sdpa_gradients(g):
    q, k, v = qkv(seed=4)
    grad_out = randn(seeded(5), 2, 3, 5, 3)
    got = g.run(sdpa, q=q, k=k, v=v, grad_out=grad_out)
    ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = torch.autograd.grad((F.scaled_dot_product_attention(*ref) * grad_out).sum(), ref)
    grads = got.get("grads")
    assert grads is not None, f"expected (output, weights), got {describe(got['result'])}"
    for name, a, b in zip("qkv", grads, want):
        close(a, b, f"gradient of {name}")


@check(1, "dropout acts on the weights in training only; the weights are returned before dropout", points=2)
def sdpa_dropout(g):
    q, k, _ = qkv(N=8, seed=6)
    v = torch.eye(8, dtype=torch.float64).expand(2, 3, 8, 8).contiguous()  # out = the weights applied
    plain_out, plain_w = (array(t, "output") for t in pair(g.run(sdpa, q=q, k=k, v=v)["result"]))
    out_eval = pair(g.run(sdpa, q=q, k=k, v=v, dropout=0.5, training=False)["result"])[0]
    close(out_eval, plain_out, "output with dropout 0.5 outside training (dropout must do nothing)")
    out, weights = pair(g.run(sdpa, q=q, k=k, v=v, dropout=0.5, training=True)["result"])
    close(weights, plain_w, "returned weights in training (they must be those before dropout)")
    out = array(out, "output in training", plain_out.shape)
    kept = out != 0
    assert 0 < kept.mean() < 1, "in training with dropout 0.5, some weights must be dropped and some kept"
    close(out[kept], 2 * plain_w[kept], "kept weights (scaled by 1 / (1 - p))")


@check(1, "queries and keys may differ in number: (B, h, N_q, d_v) and (B, h, N_q, N_k)", hidden=True)
def sdpa_cross_shapes(g):
    q, k, v = qkv(B=1, h=2, N=3, d=4, d_v=5, n_keys=6, seed=7)
    out, weights = pair(g.run(sdpa, q=q, k=k, v=v)["result"])
    close(out, F.scaled_dot_product_attention(q, k, v), "output vs torch")
    array(weights, "weights", (1, 2, 3, 6))


@check(1, "float32 inputs give float32 outputs that agree with torch", hidden=True)
def sdpa_float32(g):
    q, k, v = qkv(d=8, seed=8, dtype=torch.float32)
    out, weights = pair(g.run(sdpa, q=q, k=k, v=v)["result"])
    assert getattr(out, "dtype", None) == np.float32 and getattr(weights, "dtype", None) == np.float32, \
        "float32 inputs gave outputs that are not float32"
    close(out, F.scaled_dot_product_attention(q, k, v), "output vs torch", tol=1e-5)


# ================================================================ 2. multi-head split and merge

exercise(
    2, title="Multi-head split and merge", thesis="§2.2.1.1, Fig. 2.4 (right)",
    targets=(("attention.py", "MultiHeadSelfAttention.forward"),),
    objective="Split projected features into heads and merge them back with view, transpose and reshape, "
              "for both the thesis code's full-width heads and the Vaswani layout.",
    minutes=25,
    task="Project x (B, N, D) to queries, keys and values with q_proj, k_proj and v_proj, split the h*d "
         "features into h heads (head i owns features i*d to (i+1)*d), run scaled_dot_product_attention on "
         "all heads at once (with self.dropout and self.training), concatenate the heads back to (B, N, h*d) "
         "and apply out_proj. With return_weights, also return the weights (B, h, N, N). Both layouts must "
         "work: every head of full width d = D (the thesis code) and d = D / h (Vaswani et al.).",
    hints=("Draw the (B, N, h*d) tensor: which axis must the heads move to so that one batched product "
           "serves all of them, and what has to happen in reverse after the attention?",
           "Give the h*d feature axis two axes (h, d), heads outermost, and move h in front of N; after "
           "the attention undo both steps in reverse order. The transposed tensor is no longer "
           "contiguous, so the final flattening cannot be a view."),
    questions=("The thesis code's Keras MultiHeadAttention(num_heads=h, key_dim=D) gives every head the "
               "full width D, so one block has 3(D h d + h d) + h d D + D parameters. How many is that for "
               "UNETR-2D Mini (D = 64, h = 4, Table 5.3) with d = D and with d = D / h, and how much of "
               "Mini's 4.24M parameters (Table 5.4) do its 4 layers' attention blocks account for?",
               "For UNETR-2D Base (D = 256, h = 12, Table 5.3), why can the Vaswani layout d = D / h not be "
               "used as it is?"),
    tests=tuple(f"tests/test_attention.py::{t}*" for t in (
        "test_vaswani", "test_full_width", "test_attention_weights_are_row_stochastic", "test_fused_path")),
)

STANDIN_CALLS = []  # what the stand-in for exercise 1 was called with, per call


def standin_attention(q, k, v, dropout=0.0, training=False):
    """Stands in for exercise 1 without computing any attention: it remembers its arguments and gives
    head i's values times i + 1 and a map of (i + 1) / 100, so that the split and the merge show."""
    STANDIN_CALLS.append({"q": q, "k": k, "v": v, "dropout": float(dropout), "training": bool(training)})
    B, h, N, _ = q.shape
    scale = torch.arange(1, h + 1, dtype=v.dtype).view(1, h, 1, 1)
    return v * scale, (scale / 100).expand(B, h, N, k.shape[2])  # (B, h, N, d), (B, h, N, N)


def mhsa_state(D, h, d, seed):
    inner = h * d
    names = [f"{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")]
    shapes = {name: ((inner, D) if name.endswith("weight") else (inner,)) for name in names}
    return weights_of({**shapes, "out_proj.weight": (D, inner), "out_proj.bias": (D,)}, seed)


@probe
def mhsa(D, h, head_dim, state, x, return_weights=True, grad=False, train=False):
    """attention.MultiHeadSelfAttention with the grader's weights and the stand-in for exercise 1."""
    import attention
    m = load(attention.MultiHeadSelfAttention(D, h, head_dim=head_dim, dropout=0.25), state).train(train)
    STANDIN_CALLS.clear()
    with replaced(attention, "scaled_dot_product_attention", standin_attention):
        x.requires_grad_(grad)
        result = m(x, return_weights=return_weights)
    answer = {"result": result, "calls": [{k: c[k] for k in ("dropout", "training")} for c in STANDIN_CALLS],
              "qkv": [STANDIN_CALLS[0][k] for k in "qkv"] if STANDIN_CALLS else None}
    out = result[0] if isinstance(result, tuple) else result
    if grad and torch.is_tensor(out):
        names, params = zip(*m.named_parameters())
        grads = torch.autograd.grad(out.square().sum(), (x,) + params, allow_unused=True)
        answer["grads"] = dict(zip(("x",) + names, grads))
    return answer


@reference
def split_heads(state, x, h, d):
    """q, k, v (B, h, N, d) of Fig. 2.4 (right): head i takes features i*d .. (i+1)*d of each projection."""
    B, N, _ = x.shape
    heads = []
    for p in "qkv":
        w, b = state[f"{p}_proj.weight"], state[f"{p}_proj.bias"]
        heads.append(torch.stack([x @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(h)], 1))
    return heads


@reference
def merged_output(state, x, h, d):
    """out_proj of the heads' outputs concatenated in head order, the stand-in's output being v_i (i + 1)."""
    _, _, v = split_heads(state, x, h, d)
    heads = torch.cat([v[:, i] * (i + 1) for i in range(h)], dim=-1)  # (B, N, h*d)
    return heads @ state["out_proj.weight"].T + state["out_proj.bias"]  # (B, N, D)


@reference
def merged_gradients(state, x, h, d):
    """Gradients of sum(out^2) with respect to x and the weights it depends on, from merged_output."""
    leaves = {name: t.clone().requires_grad_(True) for name, t in {"x": x, **state}.items()
              if not name.startswith(("q_proj", "k_proj"))}  # q and k feed only the stand-in's records
    out = merged_output({**state, **leaves}, leaves["x"], h, d)
    return dict(zip(leaves, torch.autograd.grad(out.square().sum(), list(leaves.values()))))


def check_split(g, D, h, d, seed):
    state, x = mhsa_state(D, h, d, seed), randn(seeded(seed + 1), 2, 5, D)
    got = g.run(mhsa, D=D, h=h, head_dim=None if d == D else d, state=state, x=x)
    assert got["qkv"] is not None, "the layer never called scaled_dot_product_attention"
    for name, seen, want in zip("qkv", got["qkv"], g.expect(split_heads, state, x, h, d)):
        close(seen, want, f"{name} given to the attention (head i = features i*d to (i+1)*d, (B, h, N, d))")
    return got, state, x


@check(2, "Vaswani layout (d = D/h): q, k, v split into heads, head i on features i*d to (i+1)*d", points=2)
def mhsa_split(g):
    check_split(g, 12, 3, 4, seed=10)


@check(2, "full-width heads (d = D, the thesis code): q, k, v split the same way", points=2)
def mhsa_full_width(g):
    check_split(g, 8, 4, 8, seed=12)


@check(2, "the heads' outputs are concatenated in head order and projected by out_proj, (B, N, D)", points=2)
def mhsa_merge(g):
    got, state, x = check_split(g, 12, 3, 4, seed=14)
    close(pair(got["result"])[0], g.expect(merged_output, state, x, 3, 4),
          "output (the stand-in for the attention gives head i's values times i + 1)")


@check(2, "gradients reach x, v_proj and out_proj as in a float64 reference", points=2)
def mhsa_gradients(g):
    state, x = mhsa_state(12, 3, 4, seed=16), randn(seeded(17), 2, 5, 12)
    got = g.run(mhsa, D=12, h=3, head_dim=4, state=state, x=x, return_weights=False, grad=True)
    assert "grads" in got, f"expected one output tensor, got {describe(got['result'])}"
    for name, want in g.expect(merged_gradients, state, x, 3, 4).items():
        close(got["grads"].get(name), want, f"gradient of {name}")


@check(2, "heads are independent: changing head 1's query weights changes head 1's queries only")
def mhsa_heads_independent(g):
    state, x = mhsa_state(8, 4, 2, seed=18), randn(seeded(19), 1, 6, 8)
    moved = dict(state, **{"q_proj.weight": state["q_proj.weight"].clone()})
    moved["q_proj.weight"][2:4] += 1.0  # head 1 owns features 2..3
    before, after = (g.run(mhsa, D=8, h=4, head_dim=2, state=s, x=x)["qkv"] for s in (state, moved))
    assert before is not None, "the layer never called scaled_dot_product_attention"
    before, after = (array(t[0], "q given to the attention", (1, 4, 6, 2)) for t in (before, after))
    changed = [bool(np.abs(after[:, i] - before[:, i]).max() > 1e-9) for i in range(4)]
    assert changed == [False, True, False, False], \
        f"heads whose queries changed: {changed}, expected head 1 only (head i owns features i*d to (i+1)*d)"


@check(2, "return_weights passes the attention's weights through; without it the output alone comes back")
def mhsa_return_weights(g):
    state, x = mhsa_state(12, 3, 4, seed=20), randn(seeded(21), 2, 5, 12)
    _, weights = pair(g.run(mhsa, D=12, h=3, head_dim=4, state=state, x=x)["result"])
    want = (torch.arange(1, 4, dtype=torch.float64).view(1, 3, 1, 1) / 100).expand(2, 3, 5, 5)
    close(weights, want, "weights (those the attention returned)")
    array(g.run(mhsa, D=12, h=3, head_dim=4, state=state, x=x, return_weights=False)["result"],
          "output without return_weights", (2, 5, 12))


@check(2, "any head width works (D = 6, h = 2, d = 5): split, merge and projection", points=2, hidden=True)
def mhsa_any_width(g):
    state, x = mhsa_state(6, 2, 5, seed=22), randn(seeded(23), 3, 4, 6)
    got = g.run(mhsa, D=6, h=2, head_dim=5, state=state, x=x)
    close(pair(got["result"])[0], g.expect(merged_output, state, x, 2, 5), "output")


@check(2, "the attention gets self.dropout and self.training (dropout in training only)", hidden=True)
def mhsa_passes_dropout(g):
    state, x = mhsa_state(8, 2, 4, seed=24), randn(seeded(25), 1, 3, 8)
    for train in (True, False):
        calls = g.run(mhsa, D=8, h=2, head_dim=4, state=state, x=x, train=train)["calls"]
        assert calls == [{"dropout": 0.25, "training": train}], \
            f"in {'training' if train else 'eval'} mode the attention was called as {calls}, " \
            f"expected once with dropout 0.25 and training {train}"


# ================================================================ 3. patch embedding

exercise(
    3, title="Patch embedding and position embedding", thesis="§2.2.5, §3.1, Fig. 2.5",
    targets=(("vit.py", "PatchEmbedding.forward"),),
    objective="Turn an image into a sequence of patch tokens with reshape and permute, and see that the "
              "linear patch projection is a strided convolution.",
    minutes=20,
    task="Cut the (B, C, H, W) image into non-overlapping P x P patches in row-major order (token n is "
         "patch row n // (W/P), column n % (W/P)), flatten each patch in (C, P_row, P_col) order, project it "
         "to D with self.proj and add the learned position embedding self.pos_embed, one vector per patch "
         "position (no class token, as in UNETR [33]). Refuse an input that is not img_size x img_size with "
         "a ValueError.",
    hints=("Split each of H and W into (number of patches, P) with one reshape; then bring the two "
           "patch-grid "
           "axes to the front and the three within-patch axes (C, P, P) to the back.",
           "Six axes do it: batch, channel, then (patch row, row in the patch) and (patch column, column "
           "in the patch). Order them patch row, patch column, then channel and the two in-patch axes, "
           "and flatten each group. The result equals a Conv2d with kernel = stride = P whose weight is "
           "proj.weight viewed as (D, C, P, P)."),
    questions=("§3.1 keeps ViT-Base's rule that D equals the length of a flattened patch (768 for 16 x 16 x "
               "3, Table 2.1) and so sets D = 256 for the grey EM images. How many tokens N does a 256 x 256 "
               "input give, and how many parameters does the patch projection of UNETR-2D Base have?",),
    tests=tuple(f"tests/test_vit.py::{t}*" for t in (
        "test_patch_embedding", "test_wrong_input_size", "test_token_grid")),
)


def patch_state(C, img, P, D, seed):
    return weights_of({"proj.weight": (D, C * P * P), "proj.bias": (D,),
                       "pos_embed": (1, (img // P) ** 2, D)}, seed)


@probe
def patch_embedding(img, P, C, D, state, x, grad=False):
    """vit.PatchEmbedding with the grader's weights; with grad, the gradients of sum(tokens^2)."""
    import vit
    pe = load(vit.PatchEmbedding(img_size=img, patch_size=P, in_channels=C, embed_dim=D), state)
    result = pe(x)
    answer = {"result": result}
    if grad and torch.is_tensor(result):
        names, params = zip(*pe.named_parameters())
        grads = torch.autograd.grad(result.square().sum(), params, allow_unused=True)
        answer["grads"] = dict(zip(names, grads))
    return answer


@probe
def patch_embedding_raises(img, P, C, D, state, x):
    import vit
    pe = vit.PatchEmbedding(img_size=img, patch_size=P, in_channels=C, embed_dim=D)
    return raised_by(load(pe, state), x)


@reference
def conv_tokens(state, x, P):
    """Fig. 2.5 as a strided convolution: Conv2d(C, D, P, stride P) with proj.weight, plus pos_embed."""
    D, C = state["proj.weight"].shape[0], x.shape[1]
    weight = state["proj.weight"].view(D, C, P, P)
    conv = F.conv2d(x, weight, state["proj.bias"], stride=P)  # (B, D, H/P, W/P)
    return conv.flatten(2).transpose(1, 2) + state["pos_embed"]  # (B, N, D)


@check(3, "equals a Conv2d with kernel = stride = P and weight proj.weight, plus pos_embed (C = 2)", points=2)
def patch_matches_conv(g):
    state, x = patch_state(2, 8, 4, 5, seed=30), randn(seeded(31), 3, 2, 8, 8)
    close(g.run(patch_embedding, img=8, P=4, C=2, D=5, state=state, x=x)["result"],
          g.expect(conv_tokens, state, x, 4), "tokens vs strided convolution")


@check(3, "tokens are in row-major patch order: token n is patch row n // (W/P), column n % (W/P)", points=2)
def patch_row_major(g):
    state = patch_state(1, 12, 4, 5, seed=32)
    state["pos_embed"] = torch.zeros_like(state["pos_embed"])
    state["proj.bias"] = torch.zeros(5, dtype=torch.float64)
    cells = [(0, 2), (1, 0), (2, 1)]
    x = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    for i, (row, col) in enumerate(cells):
        x[i, 0, 4 * row + 1, 4 * col + 2] = 1.0  # one pixel inside patch (row, col)
    tokens = g.run(patch_embedding, img=12, P=4, C=1, D=5, state=state, x=x)["result"]
    tokens = array(tokens, "tokens", (3, 9, 5))
    for i, (row, col) in enumerate(cells):
        lit = np.nonzero(np.abs(tokens[i]).sum(-1) > 1e-12)[0].tolist()
        assert lit == [3 * row + col], \
            f"a pixel of patch (row {row}, column {col}) reached token(s) {lit}, expected token " \
            f"{3 * row + col}"


@check(3, "the position embedding is added, one vector per token (zero image -> proj.bias + pos_embed)")
def patch_position_embedding(g):
    state = patch_state(2, 8, 4, 5, seed=33)
    zeros = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    got = g.run(patch_embedding, img=8, P=4, C=2, D=5, state=state, x=zeros)
    close(got["result"], (state["proj.bias"] + state["pos_embed"]).expand(2, 4, 5), "tokens of a zero image")


@check(3, "an input that is not img_size x img_size raises ValueError")
def patch_refuses_size(g):
    state = patch_state(2, 8, 4, 5, seed=34)
    x = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    got = g.run(patch_embedding_raises, img=8, P=4, C=2, D=5, state=state, x=x)["raised"]
    assert got == "ValueError", f"a 16x16 input to an 8x8 patch embedding raised {got}, expected ValueError"


@check(3, "gradients reach proj and pos_embed")
def patch_gradients(g):
    state, x = patch_state(2, 8, 4, 5, seed=35), randn(seeded(36), 2, 2, 8, 8)
    grads = g.run(patch_embedding, img=8, P=4, C=2, D=5, state=state, x=x, grad=True).get("grads", {})
    for name in ("proj.weight", "proj.bias", "pos_embed"):
        grad = grads.get(name)
        assert isinstance(grad, np.ndarray) and np.abs(grad).sum() > 0, f"no gradient reached {name}"


@check(3, "three channels, 2 x 2 patches on a 3 x 3 grid equal the strided convolution", points=2,
       hidden=True)
def patch_three_channels(g):
    state, x = patch_state(3, 6, 2, 4, seed=37), randn(seeded(38), 2, 3, 6, 6)
    close(g.run(patch_embedding, img=6, P=2, C=3, D=4, state=state, x=x)["result"],
          g.expect(conv_tokens, state, x, 2), "tokens vs strided convolution")


@check(3, "an oblong input (8 x 16 for img_size 8) raises ValueError too", hidden=True)
def patch_refuses_oblong(g):
    state = patch_state(1, 8, 4, 3, seed=39)
    got = g.run(patch_embedding_raises, img=8, P=4, C=1, D=3, state=state,
                x=torch.zeros(1, 1, 8, 16, dtype=torch.float64))["raised"]
    assert got == "ValueError", f"an 8x16 input to an 8x8 patch embedding raised {got}, expected ValueError"


# ================================================================ 4. one pre-norm encoder layer

exercise(
    4, title="One pre-norm encoder layer", thesis="§2.2.1, Eq. 2.2, Fig. 2.3, Fig. 2.5",
    targets=(("vit.py", "TransformerBlock.forward"),),
    objective="Assemble an encoder layer from its residual branches, and tell pre-norm (the thesis code, "
              "ViT [13]) from post-norm (Fig. 2.3).",
    minutes=20,
    task="x = x + MHSA(LN1(x)), then x = x + MLP(LN2(x)), where the MLP of the thesis code is fc1, GELU, "
         "dropout, fc2, GELU, dropout, each dropout being self.drop (the check swaps it for a known "
         "scaling to "
         "see where it acts). The layer is pre-norm as in ViT [13]: each LayerNorm sits inside its residual "
         "branch, not after the sum as in Fig. 2.3. With return_weights, also return the attention weights "
         "(B, h, N, N).",
    hints=("Write the two residual updates as two lines of the form x = x + branch(x); what goes inside "
           "each branch, and what stays outside it on the residual path?",
           "Each branch starts with its own LayerNorm and ends before the addition; nothing touches the "
           "sums themselves. The MLP branch alternates linear map, self.act and self.drop, twice. "
           "self.attn gives its weights too when asked with return_weights=True. Eq. 2.2 has one ReLU; "
           "the thesis code puts GELU after both linear maps."),
    questions=("Table 5.4: UNETR-2D Mini (4 layers) scores 0.861 on Lucchi++ and Base (12 layers) 0.853. "
               "What does §5.2 give as the reasons why a smaller Transformer does as well here?",
               "In a pre-norm stack, what path does the input of layer 1 have to the output of layer L "
               "that a "
               "post-norm stack (Fig. 2.3) lacks?"),
    tests=tuple(f"tests/test_vit.py::{t}*" for t in (
        "test_transformer_block", "test_encoder_returns_every_layer",
        "test_gradients_reach_every_parameter")),
)


class TorchAttention(nn.Module):
    """Exercise 2's job done by torch.nn.MultiheadAttention; remembers its input."""

    def __init__(self, embed_dim, n_heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed_dim, n_heads, batch_first=True)
        self.seen = None

    def forward(self, x, return_weights=False):
        self.seen = x
        out, weights = self.mha(x, x, x, need_weights=True, average_attn_weights=False)
        return (out, weights) if return_weights else out


class Scale(nn.Module):
    """Stands in for self.drop: multiplies by a known factor, so the output shows where dropout acts."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def layer_state(D, M, seed):
    state = weights_of({"fc1.weight": (M, D), "fc1.bias": (M,), "fc2.weight": (D, M), "fc2.bias": (D,),
                        "attn.mha.in_proj_weight": (3 * D, D), "attn.mha.in_proj_bias": (3 * D,),
                        "attn.mha.out_proj.weight": (D, D), "attn.mha.out_proj.bias": (D,)}, seed)
    g = seeded(seed + 1)
    for norm in ("norm1", "norm2"):
        state[f"{norm}.weight"], state[f"{norm}.bias"] = 1 + randn(g, D, std=0.3), randn(g, D, std=0.3)
    return state


@probe
def encoder_layer(D, h, M, state, x, dropout=0.0, train=False, seed=0, drop_scale=None, return_weights=False):
    """vit.TransformerBlock with torch's attention (exercise 2 done by torch) and the grader's weights."""
    import vit
    block = vit.TransformerBlock(D, h, M, dropout=dropout, head_dim=D // h)
    block.attn = TorchAttention(D, h)
    load(block, state).train(train)
    if drop_scale is not None:
        block.drop = Scale(drop_scale)
    torch.manual_seed(seed)
    result = block(x, return_weights=return_weights)
    return {"result": result, "attention_input": block.attn.seen}


@reference
def layer_reference(state, x, h, drop_scale=1.0):
    """(output, LN1(x), weights) of the pre-norm layer in float64, dropout replaced by drop_scale."""
    D = x.shape[-1]
    mha = nn.MultiheadAttention(D, h, batch_first=True).double()
    mha.load_state_dict({k[len("attn.mha."):]: v for k, v in state.items() if k.startswith("attn.mha.")})

    def norm(i, t):
        return F.layer_norm(t, (D,), state[f"norm{i}.weight"], state[f"norm{i}.bias"], eps=1e-6)
    ln1 = norm(1, x)
    a, weights = mha(ln1, ln1, ln1, need_weights=True, average_attn_weights=False)
    y = x + a  # (B, N, D)
    hidden = drop_scale * F.gelu(F.linear(norm(2, y), state["fc1.weight"], state["fc1.bias"]))  # (B, N, M)
    return y + drop_scale * F.gelu(F.linear(hidden, state["fc2.weight"], state["fc2.bias"])), ln1, weights


def run_layer(g, state, x, **kw):
    return g.run(encoder_layer, D=8, h=2, M=16, state=state, x=x, **kw)


@check(4, "pre-norm: the attention reads LayerNorm1(x) (eps 1e-6), not x", points=2)
def layer_prenorm(g):
    state, x = layer_state(8, 16, seed=40), randn(seeded(41), 2, 6, 8)
    seen = run_layer(g, state, x)["attention_input"]
    assert seen is not None, "the layer never called self.attn"
    close(seen, g.expect(layer_reference, state, x, 2)[1], "input of the attention")


@check(4, "attention branch: with the MLP's output zeroed, the layer gives x + MHSA(LN1(x))")
def layer_attention_branch(g):
    state, x = layer_state(8, 16, seed=42), randn(seeded(43), 2, 6, 8)
    state["fc2.weight"] = torch.zeros(8, 16, dtype=torch.float64)
    state["fc2.bias"] = torch.zeros(8, dtype=torch.float64)
    close(run_layer(g, state, x)["result"], g.expect(layer_reference, state, x, 2)[0], "output")


@check(4, "MLP branch: with the attention's output zeroed, x + GELU(fc2(GELU(fc1(LN2(x)))))")
def layer_mlp_branch(g):
    state, x = layer_state(8, 16, seed=44), randn(seeded(45), 2, 6, 8)
    state["attn.mha.out_proj.weight"] = torch.zeros(8, 8, dtype=torch.float64)
    state["attn.mha.out_proj.bias"] = torch.zeros(8, dtype=torch.float64)
    close(run_layer(g, state, x)["result"], g.expect(layer_reference, state, x, 2)[0], "output")


@check(4, "the whole layer equals a float64 reference: y = x + MHSA(LN1(x)), then y + MLP(LN2(y))", points=2)
def layer_whole(g):
    state, x = layer_state(8, 16, seed=46), randn(seeded(47), 2, 6, 8)
    close(run_layer(g, state, x)["result"], g.expect(layer_reference, state, x, 2)[0], "output")


@check(4, "return_weights also returns the attention weights (B, h, N, N)")
def layer_weights(g):
    state, x = layer_state(8, 16, seed=48), randn(seeded(49), 2, 6, 8)
    _, weights = pair(run_layer(g, state, x, return_weights=True)["result"])
    close(weights, g.expect(layer_reference, state, x, 2)[2], "weights")


@check(4, "self.drop acts after each GELU of the MLP and nowhere else (not on the residual sums)", points=2)
def layer_dropout_places(g):
    state, x = layer_state(8, 16, seed=50), randn(seeded(51), 2, 6, 8)
    got = run_layer(g, state, x, drop_scale=0.5)["result"]
    try:
        close(got, g.expect(layer_reference, state, x, 2, 0.5)[0], "output with self.drop as x -> 0.5 x")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the MLP is fc1, GELU, drop, fc2, GELU, drop (use self.drop)") from None


@check(4, "the MLP's dropout acts in training only")
def layer_dropout_training(g):
    state, x = layer_state(8, 16, seed=52), randn(seeded(53), 2, 6, 8)
    close(run_layer(g, state, x, dropout=0.5)["result"], g.expect(layer_reference, state, x, 2)[0],
          "output in eval mode with dropout 0.5")
    trained = run_layer(g, state, x, dropout=0.5, train=True)["result"]
    trained = array(trained, "output in training", (2, 6, 8))
    evaluated = array(run_layer(g, state, x, dropout=0.5)["result"], "output in eval mode")
    assert not np.allclose(trained, evaluated), "dropout 0.5 changed nothing in training"


@check(4, "another size (D = 6, h = 3, M = 10, one sample of 3 tokens) equals the reference", hidden=True)
def layer_other_size(g):
    state, x = layer_state(6, 10, seed=54), randn(seeded(55), 1, 3, 6)
    got = g.run(encoder_layer, D=6, h=3, M=10, state=state, x=x)["result"]
    close(got, g.expect(layer_reference, state, x, 3)[0], "output")


# ================================================================ 5. UNETR-2D skips

exercise(
    5, title="UNETR-2D skips: reshape, taps, blue blocks", thesis="§2.2.5, §3.1, §5.1.2, Fig. 2.6, Table 5.3",
    targets=(("vit.py", "tokens_to_image"), ("unetr2d.py", "ViTSide.vit_skip"),
             ("unetr2d.py", "BlueBlock.forward")),
    objective="Fold tokens back onto the patch grid and wire the UNETR-2D skip connections: which encoder "
              "layer feeds which decoder level, through how many blue blocks.",
    minutes=30,
    task="Level l of UNETR-2D (1 <= l < K) reads the output of encoder layer S_m * l (z3, z6, z9 for Base), "
         "folds its N tokens back onto the (H/P, W/P) patch grid and brings it to H / 2^l with K - l blue "
         "blocks; level 0 is a double block on the raw input. Write tokens_to_image (token n lands at "
         "divmod(n, W/P)), ViTSide.vit_skip (self.skip_layers holds the 1-based layer numbers S_m * l, "
         "self.skips[l] the blocks of level l; fold with vit.tokens_to_image) and BlueBlock.forward "
         "(transpose conv, then the conv block with its BatchNorm).",
    hints=("tokens_to_image undoes the patch embedding's flattening of the grid; vit_skip is an index lookup "
           "plus two calls; a blue block is two of its own attributes applied in order.",
           "The tokens are the grid read row by row: give N its two grid axes and move D to the channel "
           "place. hidden[i] is the output of layer i + 1, while self.skip_layers holds layer numbers. "
           "self.conv is a whole conv block (conv, norm, activation): call it, do not rebuild it."),
    questions=("With S_m = 3 (Base, Table 5.3) and K = 4, which encoder layers feed levels 1, 2 and 3 "
               "and the "
               "bottleneck, and how many blue blocks does each level's skip use?",
               "YNETR-2D reuses these skips beside a CNN encoder. Table 5.4 has it beat the U-Net on "
               "Kasthuri++ (0.917 vs 0.910) but not on Lucchi++ (0.880 to 0.894 vs 0.903). The thesis does "
               "not settle why: which explanation from §5.2 (small objects, local detail, the CNN encoder) "
               "fits, and which experiment would test it?"),
    tests=("tests/test_vit.py::test_tokens_to_image*", "tests/test_vit.py::test_token_grid*",
           "tests/test_unetr.py::test_shapes_gradients*", "tests/test_unetr.py::test_skip_taps*",
           "tests/test_unetr.py::test_concatenation_orders*"),
)


FOLDS = []  # what the stand-in for tokens_to_image was called with


def standin_fold(z, grid):
    """Stands in for tokens_to_image in the vit_skip checks: remembers (z, grid), returns 7s of the
    folded shape (B, D, H/P, W/P), so that the tap and the skip path show without any reshape here."""
    FOLDS.append((z, grid))
    gh, gw = grid if isinstance(grid, tuple) else (grid, grid)
    return torch.full((z.shape[0], z.shape[2], gh, gw), 7.0, dtype=z.dtype)


class Recorder(nn.Module):
    """Stands in for the skip path of one level: remembers its input and returns it times `factor`."""

    def __init__(self, factor):
        super().__init__()
        self.factor, self.seen = factor, None

    def forward(self, x):
        self.seen = x
        return x * self.factor


@probe
def fold_tokens(z, grid):
    import vit
    return {"result": vit.tokens_to_image(z, grid)}


@probe
def vit_skip(n_layers, step, patch, level, hidden, x):
    """unetr2d.ViTSide.vit_skip of a tiny UNETR-2D (16 x 16 input, D = 8) whose skip paths are recorders."""
    import unetr2d
    import vit
    name = f"exercise-{n_layers}-{step}"
    vit.CONFIGS[name] = vit.ViTConfig(n_layers=n_layers, embed_dim=8, mlp_dim=8, n_heads=1, skip_step=step)
    try:
        model = unetr2d.UNETR2D(name, filters=2, img_size=16, patch_size=patch).double()
    finally:
        del vit.CONFIGS[name]
    model.skips = nn.ModuleList(Recorder(level + 2) for level in range(model.n_levels))
    FOLDS.clear()
    with replaced(vit, "tokens_to_image", standin_fold):
        result = model.vit_skip(level, hidden, x)
    return {"result": result, "seen": [r.seen for r in model.skips], "folds": list(FOLDS)}


def blue_state(in_ch, out_ch, batch_norm, seed):
    state = weights_of({"up.weight": (in_ch, out_ch, 2, 2), "up.bias": (out_ch,),
                        "conv.conv.weight": (out_ch, out_ch, 3, 3), "conv.conv.bias": (out_ch,)}, seed)
    return batch_norm_stats(state, "conv.norm", out_ch, seed + 1) if batch_norm else state


@probe
def blue_block(in_ch, out_ch, batch_norm, state, x):
    import unetr2d
    block = load(unetr2d.BlueBlock(in_ch, out_ch, batch_norm=batch_norm), state).eval()
    return {"result": block(x)}


@reference
def blue_reference(state, x, batch_norm):
    """Transpose conv 2x2 stride 2, conv 3x3 'same', [BatchNorm eval, eps 1e-3], ReLU, in float64."""
    y = F.conv_transpose2d(x, state["up.weight"], state["up.bias"], stride=2)
    y = F.conv2d(y, state["conv.conv.weight"], state["conv.conv.bias"], padding=1)
    if batch_norm:
        y = F.batch_norm(y, state["conv.norm.running_mean"], state["conv.norm.running_var"],
                         state["conv.norm.weight"], state["conv.norm.bias"], training=False, eps=1e-3)
    return F.relu(y)


def check_fold(g, B, D, grid):
    gh, gw = grid if isinstance(grid, tuple) else (grid, grid)
    z = torch.arange(B * gh * gw * D, dtype=torch.float64).view(B, gh * gw, D)
    got = array(g.run(fold_tokens, z=z, grid=grid)["result"], f"a {gh}x{gw} grid", (B, D, gh, gw))
    for n in range(gh * gw):
        where = f"token {n} on a {gh}x{gw} grid (row-major, (B, D, H/P, W/P))"
        close(got[:, :, n // gw, n % gw], z[:, n], where)


@check(5, "tokens_to_image puts token n at (n // (W/P), n % (W/P)), on square and oblong grids", points=2)
def fold_row_major(g):
    check_fold(g, 2, 3, 3)
    check_fold(g, 2, 3, (2, 4))


def check_taps(g, n_layers, step, patch):
    n_levels, grid = int(math.log2(patch)), 16 // patch
    gen = seeded(60 + n_layers)
    x = torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64)
    hidden = [randn(gen, 2, grid * grid, 8) for _ in range(n_layers)]
    for level in range(1, n_levels):
        got = g.run(vit_skip, n_layers=n_layers, step=step, patch=patch, level=level, hidden=hidden, x=x)
        assert len(got["folds"]) == 1, f"level {level}: vit.tokens_to_image was called {len(got['folds'])} " \
            "times, expected once (fold the tapped hidden state with vit.tokens_to_image)"
        z, fold_grid = got["folds"][0]
        read = [i + 1 for i, h in enumerate(hidden)
                if tuple(z.shape) == tuple(h.shape) and np.array_equal(z, h)]
        assert read, f"level {level}: tokens_to_image got no hidden state"
        assert read == [step * level], \
            f"S_m = {step}, level {level} read layer {read[0]} (hidden[{read[0] - 1}]), expected layer " \
            f"S_m * l = {step * level} (hidden[{step * level - 1}])"
        assert fold_grid in (grid, (grid, grid)), \
            f"level {level}: folded onto grid {fold_grid}, expected {grid}"
        used = [i for i, seen in enumerate(got["seen"]) if seen is not None]
        assert used == [level], \
            f"level {level} used the skip path(s) skips{used}, expected skips[{level}] only"
        close(got["seen"][level], np.full((2, 8, grid, grid), 7.0),
              f"input of skips[{level}] (the folded tokens)")
        close(got["result"], np.full((2, 8, grid, grid), 7.0 * (level + 2)),
              f"level {level}: output (must be what skips[{level}] returns)")


@check(5, "vit_skip at level l feeds hidden state S_m * l (1-based), folded, through skips[l]", points=2)
def skip_taps(g):
    check_taps(g, 4, 1, 8)
    check_taps(g, 7, 3, 8)


@check(5, "vit_skip at level 0 is the double block skips[0] on the raw input")
def skip_level_zero(g):
    x = torch.rand(2, 1, 16, 16, generator=seeded(62), dtype=torch.float64)
    hidden = [randn(seeded(63 + i), 2, 4, 8) for i in range(4)]
    got = g.run(vit_skip, n_layers=4, step=1, patch=8, level=0, hidden=hidden, x=x)
    assert got["seen"][0] is not None and all(s is None for s in got["seen"][1:]), \
        "level 0 must use skips[0] and no other skip path"
    close(got["seen"][0], x, "input of skips[0] (the raw image)")
    close(got["result"], 2 * x, "level 0 output (must be what skips[0] returns)")


@check(5, "a blue block with BatchNorm (UNETR-2D's default): transpose conv, conv 3x3, BN, ReLU", points=2)
def blue_with_batch_norm(g):
    state, x = blue_state(3, 2, True, seed=64), randn(seeded(65), 2, 3, 4, 5)
    got = g.run(blue_block, in_ch=3, out_ch=2, batch_norm=True, state=state, x=x)["result"]
    close(got, g.expect(blue_reference, state, x, True),
          "output (eval mode, BatchNorm with running statistics)")


@check(5, "a blue block without BatchNorm: transpose conv 2x2 stride 2, then conv 3x3 + ReLU")
def blue_without_batch_norm(g):
    state, x = blue_state(3, 2, False, seed=66), randn(seeded(67), 2, 3, 4, 5)
    got = g.run(blue_block, in_ch=3, out_ch=2, batch_norm=False, state=state, x=x)["result"]
    close(got, g.expect(blue_reference, state, x, False), "output")


@check(5, "Base's taps: 12 layers, S_m = 3, P = 16 read z3, z6, z9", hidden=True)
def skip_taps_base(g):
    check_taps(g, 12, 3, 16)


@check(5, "tokens_to_image on a batch of 3, D = 5, a 3 x 4 grid", hidden=True)
def fold_other_grid(g):
    check_fold(g, 3, 5, (3, 4))


# ================================================================ 6. attention gate

exercise(
    6, title="Attention gate", thesis="§2.1, Fig. 2.2, Table 5.1 (refs. [34], [41])",
    targets=(("unet.py", "AttentionGate.coefficients"), ("unet.py", "AttentionGate.forward")),
    objective="Compute per-pixel attention coefficients from two feature maps and apply them in both "
              "published forms of the gate.",
    minutes=15,
    task="coefficients: alpha = sigmoid(psi(ReLU(W_skip * skip + W_up * up))) with the 1x1 convolutions "
         "skip_proj, up_proj and psi, each followed by its norm (an identity without BatchNorm): one "
         "coefficient in (0, 1) per pixel, (B, 1, H, W). forward: alpha rescales the upsampled decoder "
         "signal in mode 'up' (the code of [34], behind the thesis's numbers) or the encoder skip in mode "
         "'skip' (Oktay et al. [41]).",
    hints=("Follow the lower right of Fig. 2.2 from the two inputs to the single-channel map; where does "
           "each norm sit?",
           "Each norm comes right after its convolution, before the sum; alpha (B, 1, H, W) broadcasts over "
           "the channels when it multiplies a (B, f, H, W) map."),
    questions=("Table 5.1: attention gates lifted the U-Net from 0.881 to 0.884 but took UNETR-2D from 0.829 "
               "to 0.788. How many parameters does one gate of width f add without BatchNorm, and do the "
               "gates at f = 16, 32, 64, 128 explain the step from 1.95M to 1.99M in Table 5.4?",),
    tests=("tests/test_unet.py::test_attention_gate*", "tests/test_unet.py::test_gate_mode*",
           "tests/test_unet.py::test_shapes_gradients_and_size_check[att*",
           "tests/test_unet.py::test_attention_ynet_reconstruction*"),
)


def gate_state(f, batch_norm, seed):
    state = weights_of({"skip_proj.weight": (f, f, 1, 1), "skip_proj.bias": (f,),
                        "up_proj.weight": (f, f, 1, 1),
                        "up_proj.bias": (f,), "psi.weight": (1, f, 1, 1), "psi.bias": (1,)}, seed)
    if batch_norm:
        for i, (norm, n) in enumerate((("skip_norm", f), ("up_norm", f), ("psi_norm", 1))):
            batch_norm_stats(state, norm, n, seed + 1 + i)
    return state


@probe
def gate(f, batch_norm, mode, state, skip, up, method="coefficients"):
    import unet
    module = load(unet.AttentionGate(f, batch_norm=batch_norm, mode=mode), state).eval()
    return {"result": getattr(module, method)(skip, up) if method == "coefficients" else module(skip, up)}


@probe
def attention_unet_gradients():
    """A small Attention U-Net end to end: output shape and the gradient norm at each gate's psi."""
    import unet
    torch.manual_seed(0)
    model = unet.AttentionUNet(filters=2, depth=2, dropout=0.0)
    out = model(torch.rand(2, 1, 8, 8))
    out.square().mean().backward()
    grads = [gate.psi.weight.grad for gate in model.gates]
    return {"shape": tuple(out.shape), "psi_grads": [None if g is None else g.abs().sum() for g in grads]}


@reference
def gate_reference(state, skip, up, batch_norm):
    """alpha of Fig. 2.2 in float64: sigmoid(norm(psi(ReLU(norm(W_s skip) + norm(W_u up)))))."""
    def conv_norm(name, norm, x):
        y = F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"])
        if not batch_norm:
            return y
        return F.batch_norm(y, state[f"{norm}.running_mean"], state[f"{norm}.running_var"],
                            state[f"{norm}.weight"], state[f"{norm}.bias"], training=False, eps=1e-3)
    s = conv_norm("skip_proj", "skip_norm", skip) + conv_norm("up_proj", "up_norm", up)
    return torch.sigmoid(conv_norm("psi", "psi_norm", F.relu(s)))  # (B, 1, H, W)


def skip_up(seed, shape=(2, 3, 4, 5)):
    gen = seeded(seed)
    return randn(gen, *shape), randn(gen, *shape)


@check(6, "alpha = sigmoid(psi(ReLU(W_skip skip + W_up up))), one coefficient per pixel (float64)", points=2)
def gate_alpha(g):
    state, (skip, up) = gate_state(3, False, seed=70), skip_up(71)
    got = g.run(gate, f=3, batch_norm=False, mode="up", state=state, skip=skip, up=up)["result"]
    close(got, g.expect(gate_reference, state, skip, up, False), "alpha")


@check(6, "with batch_norm, a BatchNorm follows each 1x1 conv (eval mode, float64)", points=2)
def gate_batch_norm(g):
    state, (skip, up) = gate_state(3, True, seed=72), skip_up(73)
    got = g.run(gate, f=3, batch_norm=True, mode="up", state=state, skip=skip, up=up)["result"]
    close(got, g.expect(gate_reference, state, skip, up, True), "alpha")


@check(6, "mode 'up' rescales the upsampled decoder signal: up * alpha (code of [34])")
def gate_mode_up(g):
    state, (skip, up) = gate_state(3, False, seed=74), skip_up(75)
    got = g.run(gate, f=3, batch_norm=False, mode="up", state=state, skip=skip, up=up, method="forward")
    close(got["result"], up * g.expect(gate_reference, state, skip, up, False), "output")


@check(6, "mode 'skip' rescales the encoder skip: skip * alpha (Oktay et al. [41])")
def gate_mode_skip(g):
    state, (skip, up) = gate_state(3, False, seed=76), skip_up(77)
    got = g.run(gate, f=3, batch_norm=False, mode="skip", state=state, skip=skip, up=up, method="forward")
    close(got["result"], skip * g.expect(gate_reference, state, skip, up, False), "output")


@check(6, "an Attention U-Net runs end to end and its gates learn (gradient reaches psi)")
def gate_in_a_unet(g):
    got = g.run(attention_unet_gradients)
    assert tuple(got["shape"]) == (2, 1, 8, 8), f"output shape {got['shape']}, expected (2, 1, 8, 8)"
    for i, grad in enumerate(got["psi_grads"]):
        assert grad is not None and float(grad) > 0, f"no gradient reached the psi of gate {i}"


@check(6, "five channels on 3 x 7 maps, one sample, with BatchNorm", hidden=True)
def gate_other_size(g):
    state, (skip, up) = gate_state(5, True, seed=78), skip_up(79, (1, 5, 3, 7))
    got = g.run(gate, f=5, batch_norm=True, mode="skip", state=state, skip=skip, up=up, method="forward")
    close(got["result"], skip * g.expect(gate_reference, state, skip, up, True), "output")


# ================================================================ 7. mirror padding

exercise(
    7, title="Mirror padding to a multiple", thesis="§4.3.1, §4.2, Fig. 4.4",
    targets=(("data.py", "padding_for"), ("data.py", "pad_to_multiple")),
    objective="Pad any stack of slices up to a multiple with NumPy's 'symmetric' mirror, and tell it from "
              "'reflect' and zero padding.",
    minutes=15,
    task="Training tiles (256) and whole-slice U-Net inference (16) both mirror-pad a slice up to the next "
         "multiple. padding_for(size, multiple) gives (before, after), the odd pixel before, nothing when "
         "size is already a multiple. pad_to_multiple pads the last two axes of any array with NumPy's "
         "'symmetric' mode, which repeats the edge pixel (d c b a | a b c d), and leaves leading axes alone.",
    hints=("How much padding does a side of 1463 need to reach a multiple of 256, and which side gets the "
           "odd pixel? Then: which of np.pad's modes repeats the edge pixel?",
           "The total padding is what size lacks to the next multiple, nothing when it lacks nothing "
           "(Python's % of a negative number does both); np.pad takes one (before, after) pair per axis, "
           "(0, 0) for the leading ones; 'reflect' would give d c b | a b c d, without the edge pixel."),
    questions=("Lucchi++ slices are 768 x 1024 and Kasthuri++ training slices 1463 x 1613 (§4.1). How many "
               "256 x 256 training tiles does one slice of each give after padding (§4.3.1)?",
               "§4.2 first padded the overlap tiles with zeros. What did that do to UNETR-2D's predictions "
               "(Fig. 4.4), and why does self-attention spread the damage over the whole window?"),
    tests=tuple(f"tests/test_data.py::{t}*" for t in (
        "test_padding_for", "test_pad_to_multiple", "test_lucchi_slices", "test_tiles_of_padded")),
)


@reference
def symmetric_padding(image, multiple):
    """np.pad's 'symmetric' mode on the last two axes, the odd pixel before."""
    total = [-n % multiple for n in image.shape[-2:]]
    pad = [(0, 0)] * (image.ndim - 2) + [((t + 1) // 2, t // 2) for t in total]
    return np.pad(image, pad, mode="symmetric")


@check(7, "padding_for: -size % multiple in all, odd pixel first (768 -> 0 + 0, 1463 -> 37 + 36)", points=2)
def padding_amounts(g):
    cases = {(768, 256): (0, 0), (1024, 256): (0, 0), (1463, 256): (37, 36), (1334, 256): (101, 101),
             (5, 16): (6, 5), (300, 128): (42, 42), (1, 1): (0, 0)}
    for (size, multiple), want in cases.items():
        got = g.run(call, path="data.padding_for", args=(size, multiple))["result"]
        assert isinstance(got, (tuple, list)) and tuple(got) == want, \
            f"padding_for({size}, {multiple}) = {got}, expected {want}"


@check(7, "pad_to_multiple mirrors with the edge pixel repeated (d c b a | a b c d, not 'reflect')", points=2)
def padding_mirror(g):
    got = g.run(call, path="data.pad_to_multiple", args=(np.array([[1, 2, 3]]), 6))["result"]
    want = np.array([[2, 1, 1, 2, 3, 3]] * 6)  # 1 row -> 6 (3 + 2 rows of padding), 3 columns -> 6 (2 + 1)
    close(got, want, "[[1, 2, 3]] padded to a multiple of 6", tol=0)
    got = g.run(call, path="data.pad_to_multiple", args=(np.arange(4).reshape(2, 2), 5))["result"]
    want = np.array([[3, 2, 2, 3, 3], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1], [3, 2, 2, 3, 3], [3, 2, 2, 3, 3]])
    close(got, want, "[[0, 1], [2, 3]] padded to a multiple of 5", tol=0)


@check(7, "leading axes and dtype are kept; H and W become multiples")
def padding_leading_axes(g):
    stack = np.random.default_rng(80).integers(0, 256, (3, 5, 7)).astype(np.uint8)
    got = g.run(call, path="data.pad_to_multiple", args=(stack, 4))["result"]
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.shape == (3, 8, 8), \
        f"got {describe(got)} of {getattr(got, 'dtype', '?')}, expected uint8 (3, 8, 8)"
    want = g.expect(symmetric_padding, stack, 4)
    for i in range(3):
        close(got[i, 2:7, 1:8], stack[i], f"slice {i} inside its padding", tol=0)
        close(got[i], want[i], f"slice {i} with its padding", tol=0)


@check(7, "a slice whose sides are already multiples comes back unchanged")
def padding_none_needed(g):
    image = np.random.default_rng(81).random((32, 48)).astype(np.float32)
    close(g.run(call, path="data.pad_to_multiple", args=(image, 16))["result"], image,
          "a 32x48 slice padded to a multiple of 16", tol=0)


@probe
def tiles_of(stack, tile):
    import data
    return {"result": data.extract_tiles(stack, tile)}


@check(7, "the tiles of a 300 x 500 slice reassemble its mirror-padded slice (extract_tiles)")
def padding_tiles(g):
    image = np.random.default_rng(82).integers(0, 256, (1, 300, 500)).astype(np.uint8)
    tiles = g.run(tiles_of, stack=image, tile=256)["result"]
    assert isinstance(tiles, np.ndarray) and tiles.shape == (4, 256, 256), \
        f"got {describe(tiles)}, expected 4 tiles of 256x256"
    whole = tiles.reshape(2, 2, 256, 256).transpose(0, 2, 1, 3).reshape(512, 512)
    close(whole[106:406, 6:506], image[0], "centre of the reassembled slice", tol=0)
    close(whole[105::-1, 6:506], image[0, :106], "mirrored top rows", tol=0)


@check(7, "padding wider than the slice (5 x 3 to a multiple of 16) mirrors again, as np.pad does",
       hidden=True)
def padding_wider_than_slice(g):
    image = np.arange(15, dtype=np.float32).reshape(5, 3)
    close(g.run(call, path="data.pad_to_multiple", args=(image, 16))["result"],
          g.expect(symmetric_padding, image, 16), "padded 5x3 slice", tol=0)


# ================================================================ 8. overlap-tile layout

exercise(
    8, title="Overlap-tile layout", thesis="§4.2, Fig. 4.2, Fig. 4.3",
    targets=(("stitch.py", "_axis_layout"), ("stitch.py", "tile_layout")),
    objective="Lay out the overlap-tile windows of §4.2 for any slice size so that every output pixel comes "
              "from exactly one window centre and never from padding.",
    minutes=35,
    task="Lay 256 x 256 windows at stride 128 over a mirror-padded slice so that their central 128 x 128 "
         "relevant patches tile it. A side divisible by 128 gets 64 px of padding at each end (Fig. 4.2); "
         "any other side gets the least padding that makes it a multiple of 128, split as evenly as "
         "possible (the odd pixel on top/left), and the border relevant patches grow until they reach the "
         "image border, so no kept pixel is padding (Fig. 4.3). _axis_layout solves one axis; tile_layout "
         "combines both axes into row-major Tile(window, kept, offset) records plus the padding for np.pad.",
    hints=("Solve one axis on paper first, for 384 and for 320 (the drawings in tile_layout's docstring): "
           "how many windows, where does each start, which rows does each keep?",
           "With margin m = (window - keep) / 2 and n = max(1, size // keep) windows, the padded side is "
           "n * keep + 2m and window k starts at k * keep; its kept part is [m + k * keep, m + (k + 1) * "
           "keep) minus the padding before, stretched to 0 for the first and to size for the last."),
    questions=("A Lucchi++ test slice is 768 x 1024 (case 1, Fig. 4.2). How many windows does the network "
               "run on, and what fraction of the pixels it predicts is thrown away?",
               "§4.2 first tried non-overlapping 256 x 256 tiles. Where did the errors concentrate, and why "
               "does keeping only the window centres remove them?"),
    tests=tuple(f"tests/test_stitch.py::{t}*" for t in (
        "test_identity_round_trip", "test_padding_and_window_count", "test_every_pixel",
        "test_kept_regions")),
)

LAYOUT_SIZES = [(384, 256), (320, 333), (129, 385), (100, 700)]


def layout(g, H, W):
    """tile_layout(H, W) -> (tiles as (window, kept, offset) tuples, padding), checked for its form."""
    got = g.run(call, path="stitch.tile_layout", args=(H, W))["result"]
    assert isinstance(got, (tuple, list)) and len(got) == 2, f"tile_layout({H}, {W}) gave {describe(got)}"
    tiles, padding = got
    try:
        tiles = [tuple(tuple(int(v) for v in part) for part in tile[:3]) for tile in tiles]
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    except (TypeError, ValueError):
        raise AssertionError(f"tile_layout({H}, {W}): expected (tiles of Tile(window, kept, offset), "
                             "((top, bottom), (left, right)))") from None
    return tiles, padding


@check(8, "Fig. 4.2: a side divisible by 128 gets 64 + 64 px of padding and side / 128 windows", points=2)
def layout_case_one(g):
    for H, W in [(384, 256), (128, 512)]:
        tiles, padding = layout(g, H, W)
        assert padding == ((64, 64), (64, 64)), f"{H}x{W}: padding {padding}, expected 64 + 64 on both axes"
        assert len(tiles) == (H // 128) * (W // 128), \
            f"{H}x{W}: {len(tiles)} windows, expected {(H // 128) * (W // 128)}"


@check(8, "Fig. 4.3: otherwise the least padding to a multiple of 128 (and of 256), split evenly", points=2)
def layout_case_two(g):
    for H, W in [(320, 333), (129, 385), (100, 700)]:
        _, padding = layout(g, H, W)
        for size, (before, after) in zip((H, W), padding):
            want = max(256, math.ceil(size / 128) * 128) - size
            assert before + after == want and abs(before - after) <= 1, \
                f"{H}x{W}: side {size} padded {before} + {after}, expected {want} in all, split evenly"


@check(8, "windows are 256 x 256 squares at stride 128, inside the padded image")
def layout_windows(g):
    for H, W in LAYOUT_SIZES:
        tiles, ((t, b), (l, r)) = layout(g, H, W)
        for window, _, _ in tiles:
            top, left, bottom, right = window
            assert (bottom - top, right - left) == (256, 256) and top % 128 == 0 and left % 128 == 0 \
                and top >= 0 and left >= 0 and bottom <= H + t + b and right <= W + l + r, \
                f"{H}x{W}: window {window} is not a 256 square at stride 128 inside the padded image"


@check(8, "every pixel is kept from exactly one window, never from padding", points=2)
def layout_exact_cover(g):
    for H, W in LAYOUT_SIZES:
        tiles, ((t, _), (l, _)) = layout(g, H, W)
        count = np.zeros((H, W), int)
        for window, (top, left, bottom, right), (dy, dx) in tiles:
            count[max(top, 0):bottom, max(left, 0):right] += 1
            assert 0 <= dy and 0 <= dx and dy + bottom - top <= 256 and dx + right - left <= 256, \
                f"{H}x{W}: kept {(top, left, bottom, right)} at offset {(dy, dx)} leaves its window"
            assert (top + t, left + l) == (window[0] + dy, window[1] + dx), \
                f"{H}x{W}: offset {(dy, dx)} does not place kept {(top, left, bottom, right)} in window " \
                f"{window}"
        assert count.min() == 1 and count.max() == 1, \
            f"{H}x{W}: pixels kept {count.min()} to {count.max()} times, expected exactly once"


@check(8, "relevant patches are the 128 x 128 window centres, grown only toward the image border")
def layout_centres(g):
    for H, W in [(640, 333), (320, 129)]:
        for window, (top, left, bottom, right), offset in layout(g, H, W)[0]:
            for lo, hi, size, off in ((top, bottom, H, offset[0]), (left, right, W, offset[1])):
                # a side inside the image is an edge of the window's centre, [64, 192) in the window
                assert (lo == 0 or off == 64) and (hi == size or off + hi - lo == 192), \
                    f"{H}x{W}: kept {(top, left, bottom, right)} at offset {offset} in window {window}"


@probe
def stitch_identity(image, window, keep):
    import stitch
    return {"result": stitch.predict_tiled(lambda batch: batch.copy(), image, window=window, keep=keep)}


@check(8, "predict_tiled of the identity gives the image back exactly (any size, other windows too)")
def layout_round_trip(g):
    for H, W, window, keep in [(384, 256, 256, 128), (320, 333, 256, 128), (50, 70, 256, 128),
                               (100, 70, 64, 32), (31, 97, 32, 8), (40, 33, 16, 16)]:
        image = np.random.default_rng(H).random((H, W), dtype=np.float32)
        out = g.run(stitch_identity, image=image, window=window, keep=keep)["result"]
        close(out, image, f"{H}x{W} round trip, window {window}, keep {keep}", tol=0)


@check(8, "the odd padding pixel goes on top / left, as the thesis code's mirror_border", hidden=True)
def layout_odd_pixel(g):
    _, padding = layout(g, 1334, 1553)
    assert padding == ((37, 37), (56, 55)), f"1334x1553: padding {padding}, expected ((37, 37), (56, 55))"


@check(8, "a Kasthuri++ test slice (1334 x 1553) gets 10 x 12 = 120 windows", hidden=True)
def layout_kasthuri(g):
    tiles, _ = layout(g, 1334, 1553)
    assert len(tiles) == 120, f"1334x1553: {len(tiles)} windows, expected 120"
    starts = [w[:2] for w, _, _ in tiles[:3]]
    assert starts == [(0, 0), (0, 128), (0, 256)], "windows are not in row-major order"


# ================================================================ 9. IoU_F and Dice

exercise(
    9, title="IoU_F and Dice", thesis="§4.2.1, Eq. 4.1, Eq. 4.2, Fig. 4.5",
    targets=(("evaluate.py", "iou_from_counts"), ("evaluate.py", "dice_from_counts"),
             ("evaluate.py", "iou_foreground"), ("evaluate.py", "dice_coefficient")),
    objective="Score a segmentation by its foreground only, with the edge cases (empty masks, missed "
              "objects) that a test slice can hold.",
    minutes=15,
    task="Dice = 2TP / (2TP + FP + FN) and IoU_F = TP / (TP + FP + FN), the foreground (mitochondria) being "
         "the positive class. Write both from the counts (an empty prediction of an empty mask scores 1; a "
         "slice whose mitochondria are all missed scores 0) and from two masks, any non-zero pixel being "
         "foreground (`confusion` gives the counts). True negatives do not enter: the background dominates "
         "EM slices, and counting it would inflate the score, which is why the thesis reports IoU_F.",
    hints=("Write down TP, FP and FN for a prediction that finds nothing on a slice that has mitochondria, "
           "and for one that finds nothing on a slice that has none: which of the two is 0 / 0?",
           "Guard only the 0 / 0 case (TP + FP + FN == 0) before dividing, and return a float; the mask "
           "versions are the count versions applied to confusion(pred, mask)."),
    questions=("§4.2.1 reports IoU_F rather than the mean IoU of both classes. For 3 true positives, 3 false "
               "positives, 1 false negative and 1584 true negatives, compute IoU_F and the background IoU: "
               "which one would hide the errors?",
               "Dice = 2 IoU_F / (1 + IoU_F) holds for every slice (Eq. 4.1, Eq. 4.2). Does it still hold "
               "between the means over the 165 test slices of Lucchi++ (§4.1), and why not?"),
    tests=("tests/test_evaluate.py::*",),
)


@probe
def scores_of(names, items):
    """[evaluate.<name>(*item) for each item], for each of the two names (IoU_F first, then Dice)."""
    import evaluate
    return {name: [getattr(evaluate, name)(*item) for item in items] for name in names}


def scores_agree(g, kind, items, want, what):
    """IoU_F, then Dice, of `items` (counts or (pred, mask) pairs) against want = {"iou": .., "dice": ..}."""
    names = ("iou_from_counts", "dice_from_counts") if kind == "counts" else \
        ("iou_foreground", "dice_coefficient")
    for key, name, label in (("iou", names[0], "IoU_F"), ("dice", names[1], "Dice")):
        values = g.run(scores_of, names=[name], items=items)[name]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v - w) < 1e-9
                 for v, w in zip(values, want[key]))
        assert ok, f"{what}: {label} = {values}, expected {want[key]}"


def hand_masks():
    mask, pred = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    mask[0] = True  # 4 foreground pixels; 3 found, 3 false positives, 1 missed
    pred[0, 1:], pred[1, :3] = True, True
    return pred, mask


@check(9, "IoU_F = TP / (TP + FP + FN) and Dice = 2TP / (2TP + FP + FN) from the counts", points=2)
def scores_formulas(g):
    cases = [(3, 3, 1), (5, 0, 0), (0, 4, 2), (10, 0, 30)]
    want = {"iou": [3 / 7, 1.0, 0.0, 0.25], "dice": [6 / 10, 1.0, 0.0, 0.4]}
    scores_agree(g, "counts", cases, want, f"counts (TP, FP, FN) {cases}")


@check(9, "a slice whose mitochondria are all missed (TP = FP = 0, FN > 0) scores 0, from counts and masks",
       points=2)
def scores_all_missed(g):
    scores_agree(g, "counts", [(0, 0, 7), (0, 0, 1)], {"iou": [0.0, 0.0], "dice": [0.0, 0.0]},
                 "counts (0, 0, 7) and (0, 0, 1)")
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    scores_agree(g, "masks", [(np.zeros((4, 4), bool), mask)], {"iou": [0.0], "dice": [0.0]},
                 "an empty prediction of a mask with 4 foreground pixels")


@check(9, "an empty prediction of an empty mask scores 1, from counts and from masks")
def scores_empty(g):
    empty = np.zeros((4, 4), bool)
    scores_agree(g, "counts", [(0, 0, 0)], {"iou": [1.0], "dice": [1.0]}, "counts (0, 0, 0)")
    scores_agree(g, "masks", [(empty, empty)], {"iou": [1.0], "dice": [1.0]}, "two empty masks")


@check(9, "on hand-drawn masks: IoU_F 3/7 and Dice 6/10")
def scores_hand_drawn(g):
    scores_agree(g, "masks", [hand_masks()], {"iou": [3 / 7], "dice": [6 / 10]},
                 "3 found, 3 false positives, 1 missed")


@check(9, "true negatives do not count: more background leaves IoU_F and Dice unchanged", points=2)
def scores_no_true_negatives(g):
    pred, mask = (np.pad(m, ((0, 36), (0, 36))) for m in hand_masks())
    scores_agree(g, "masks", [(pred, mask)], {"iou": [3 / 7], "dice": [6 / 10]},
                 "the same masks with 1584 more background pixels")


@check(9, "Dice = 2 IoU_F / (1 + IoU_F) on random masks")
def scores_relation(g):
    rng = np.random.default_rng(90)
    pairs = [tuple(rng.random((2, 20, 20)) < rng.random()) for _ in range(5)]
    got = g.run(scores_of, names=["iou_foreground", "dice_coefficient"], items=pairs)
    for iou, dice in zip(got["iou_foreground"], got["dice_coefficient"]):
        assert isinstance(iou, float) and isinstance(dice, float) \
            and abs(dice - 2 * iou / (1 + iou)) < 1e-12, \
            f"IoU_F {iou} but Dice {dice}"


@check(9, "evaluate_stack: per-slice mean (the thesis's number) and pooled IoU_F")
def scores_stack(g):
    big, small = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    big[:5], small[0, :2] = True, True  # 50 px found exactly; 2 px, one found
    found = small.copy()
    found[0, 1] = False
    r = g.run(call, path="evaluate.evaluate_stack",
              args=([big.astype(np.float32), found.astype(np.float32)], [big, small]))["result"]
    assert isinstance(r, dict), f"evaluate_stack gave {describe(r)}"
    got = r.get("test_iou_f"), r.get("test_iou_f_global")
    assert np.allclose(got, (0.75, 51 / 52)), f"per-slice mean, pooled = {got}, expected 0.75, {51 / 52:.4f}"


@check(9, "masks stored as 0 / 255 (Lucchi++) count every non-zero pixel as foreground", hidden=True)
def scores_255(g):
    pred, mask = hand_masks()
    scores_agree(g, "masks", [(pred.astype(np.uint8), mask.astype(np.uint8) * 255)],
                 {"iou": [3 / 7], "dice": [6 / 10]}, "a 0/1 prediction of a 0/255 mask")


@check(9, "a slice of false positives only (0, 5, 0) scores 0", hidden=True)
def scores_false_positives_only(g):
    scores_agree(g, "counts", [(0, 5, 0)], {"iou": [0.0], "dice": [0.0]}, "counts (0, 5, 0)")


# ================================================================ 10. two pretext degradations

exercise(
    10, title="Two pretext degradations", thesis="§3.3, Fig. 3.2, Table 5.5",
    targets=(("degrade.py", "gaussian_noise"), ("degrade.py", "cutout")),
    objective="Write two of the self-supervised pretext degradations as pure functions of an image and a "
              "seeded generator, with uint8 arithmetic that rounds and clips.",
    minutes=20,
    task="gaussian_noise adds N(0, sigma) noise, sigma = 0.15 * 255 by default, drawn once per pixel from "
         "rng, then rounds and clips to uint8. cutout fills between n_min and n_max boxes (both included) of "
         "round(size * H) x round(size * W) pixels with `fill`; each box centre is uniform over the image, "
         "and a box is cut off where it leaves the image. Both are pure: they never change their input and "
         "draw only from rng.",
    hints=("What happens to 250 + 20 in uint8 arithmetic, and to -0.6 under astype(np.uint8)? Where may a "
           "box's centre lie, and what happens to the part of a box outside the image?",
           "_to_uint8 rounds and clips; rng.integers(low, high) never returns high; slicing with a negative "
           "start wraps around in NumPy, so clamp the top-left corner at 0 before slicing."),
    questions=("Table 5.5: pre-training on Gaussian noise gave +0.019 and cutout +0.015 over the 0.852 "
               "baseline, below the blurs and low-resolution emulation (+0.024). What difference between "
               "the two families does §5.3 point to?",),
    tests=("tests/test_degrade.py::test_gaussian_noise*", "tests/test_degrade.py::test_cutout*"),
)


@probe
def degrade_runs(name, image, seeds, kwargs=None):
    """degrade.<name>(image, rng) once per seed; also the input afterwards, to see that it is unchanged."""
    import degrade
    fn = getattr(degrade, name)
    results = [fn(image, np.random.default_rng(seed), **(kwargs or {})) for seed in seeds]
    return {"results": results, "input_after": image}


@check(10, "gaussian_noise: per-pixel N(0, 0.15 * 255), rounded (mean 0, std 38.25, uncorrelated)", points=2)
def noise_statistics(g):
    out = g.run(degrade_runs, name="gaussian_noise", image=np.full((512, 512), 128, np.uint8), seeds=[100])
    noise = array(out["results"][0], "output", (512, 512)) - 128
    assert abs(noise.std() - 38.25) < 0.5, f"noise std {noise.std():.2f}, expected 0.15 * 255 = 38.25"
    assert abs(noise.mean()) < 0.3, f"noise mean {noise.mean():.3f}, expected 0 (round, do not truncate)"
    r = np.corrcoef(noise[:, 1:].ravel(), noise[:, :-1].ravel())[0, 1]
    assert abs(r) < 0.02, f"neighbouring pixels correlate ({r:.3f}): draw the noise once per pixel"


@check(10, "gaussian_noise: clips to [0, 255] instead of wrapping around")
def noise_clips(g):
    for level, ok in ((255, lambda out: out.min() >= 40), (0, lambda out: out.max() <= 215)):
        out = g.run(degrade_runs, name="gaussian_noise", image=np.full((128, 128), level, np.uint8),
                    seeds=[101])["results"][0]
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and ok(out), \
            f"an image of {level} gave {describe(out)} with values {np.min(out)} to {np.max(out)}"


@check(10, "gaussian_noise and cutout are pure: input unchanged, uint8 out, same seed same result")
def degrade_pure(g):
    image = np.random.default_rng(102).integers(0, 256, (64, 48)).astype(np.uint8)
    for name in ("gaussian_noise", "cutout"):
        got = g.run(degrade_runs, name=name, image=image, seeds=[103, 103])
        a, b = got["results"]
        assert np.array_equal(got["input_after"], image), f"{name} changed its input"
        assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == image.shape, \
            f"{name}: {describe(a)} of {getattr(a, 'dtype', '?')} out, expected uint8 {image.shape}"
        assert np.array_equal(a, b), f"{name}: the same seed gave different results"


@check(10, "cutout: one box is round(0.2 H) x round(0.2 W), cut off where it leaves the image", points=2)
def cutout_box(g):
    H, W = 53, 42  # round(10.6) = 11 rows, round(8.4) = 8 columns
    outs = g.run(degrade_runs, name="cutout", image=np.full((H, W), 200, np.uint8), seeds=list(range(60)),
                 kwargs={"n_min": 1, "n_max": 1})["results"]
    inner = clipped = 0
    for seed, out in enumerate(outs):
        cut = array(out, f"seed {seed}", (H, W)) == 0
        rows, cols = np.nonzero(cut)
        assert len(rows), f"seed {seed}: nothing was cut"
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert cut[top:bottom, left:right].all() and cut.sum() == (bottom - top) * (right - left), \
            f"seed {seed}: the cut is not one rectangle"
        assert bottom - top <= 11 and right - left <= 8, \
            f"seed {seed}: box {bottom - top}x{right - left}, over 11x8"
        if top > 0 and left > 0 and bottom < H and right < W:
            assert (bottom - top, right - left) == (11, 8), \
                f"seed {seed}: a box inside the image is {bottom - top}x{right - left}, expected 11x8"
            inner += 1
        clipped += (bottom - top, right - left) != (11, 8)
    assert inner >= 20, f"only {inner} of 60 boxes lie inside the image: centres must be uniform over it"
    assert clipped >= 5, \
        f"only {clipped} of 60 boxes are cut off by the border: centres must be uniform over it"


@check(10, "cutout: 1 to 5 boxes (both ends occur), filled with `fill`, the rest unchanged")
def cutout_count(g):
    outs = g.run(degrade_runs, name="cutout", image=np.full((200, 200), 200, np.uint8),
                 seeds=list(range(100)),
                 kwargs={"size": 0.05, "fill": 7})["results"]
    counts = set()
    for seed, out in enumerate(outs):
        out = array(out, f"seed {seed}", (200, 200))
        assert set(np.unique(out)) <= {7, 200}, f"seed {seed}: values other than the image and the fill"
        counts.add(int(round((out == 7).sum() / 100)))  # boxes of 10 x 10 rarely overlap
    assert min(counts) <= 1 and max(counts) == 5, f"box counts seen {sorted(counts)}, expected 1 to 5"


@check(10, "gaussian_noise honours sigma (sigma = 10 gives std 10)", hidden=True)
def noise_sigma(g):
    out = g.run(degrade_runs, name="gaussian_noise", image=np.full((256, 256), 100, np.uint8), seeds=[104],
                kwargs={"sigma": 10.0})["results"][0]
    std = (array(out, "output", (256, 256)) - 100).std()
    assert abs(std - 10) < 0.3, f"noise std {std:.2f} with sigma 10"


# ================================================================ 11. histogram matching

exercise(
    11, title="Histogram matching", thesis="App. A (Histogram matching), Table 1",
    targets=(("degrade.py", "match_histogram"),),
    objective="Match an image's grey-level distribution to a target histogram through the two CDFs, and "
              "discount the zero padding that would otherwise dominate bin 0.",
    minutes=30,
    task="Map the grey levels of a uint8 image so that its CDF follows a target histogram of 256 bins (the "
         "mean histogram of the target domain, counts or frequencies): look each level's quantile in the "
         "source CDF up in the target CDF, by linear interpolation over the target's non-empty levels. With "
         "fix_zero_peak the zero padding is discounted: the source count of 0 becomes the line through the "
         "counts of 1 and 2 evaluated at 0, 2 c1 - c2, never below 0, when 0, 1 and 2 all occur; else 0, or "
         "1 for an all-black image; and 0 stays 0 in the output.",
    hints=("Build a 256-entry lookup table: for each source level, which target level has the same quantile? "
           "Which bins of the source histogram does the fix change, and which output level does it pin?",
           "Counts by np.bincount, CDFs by np.cumsum, and np.interp looks each source quantile up in the "
           "target's CDF over its non-empty levels: a 256-entry table to index the image with. The fix "
           "edits the source counts before the CDF and pins the table's entry for 0 afterwards."),
    questions=("App. A, Table 1: with histogram matching the Attention U-Net scores 0.679 from Lucchi++ to "
               "Kasthuri++ but only 0.268 the other way. The data set whose slices carry zero padding is "
               "Kasthuri++ (§4.2 notes that Lucchi++ has no large black areas). If 30% of a source slice is "
               "padding and the fix is off, which target level does the darkest tissue map to?",
               "App. A estimates the source count of 0 by linear regression on the first bins. Why not "
               "set it to 0 when 1 and 2 occur: what would that do to the darkest tissue of a dark slice?"),
    tests=("tests/test_degrade.py::test_match_histogram*",),
)


@reference
def match_reference(image, target_hist, fix_zero_peak):
    """App. A histogram matching in float64 (the CDF lookup of skimage's match_histograms for uint8)."""
    counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    keep_zero = fix_zero_peak and counts[0] > 0
    if keep_zero:
        line = max(0.0, 2 * counts[1] - counts[2])
        counts[0] = line if counts[1] and counts[2] else float(not counts[1:].any())
    target = np.asarray(target_hist, np.float64)
    levels = np.nonzero(target)[0]
    lut = np.interp(np.cumsum(counts) / counts.sum(), np.cumsum(target[levels]) / target.sum(), levels)
    if keep_zero:
        lut[0] = 0.0
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)[image]


def hist(image):
    return np.bincount(image.ravel(), minlength=256) / image.size


def dark_slice(c1, c2, seed):
    """A dark 40 x 60 slice with a zero border of 20 px, exactly c1 pixels of 1 and c2 of 2."""
    rng = np.random.default_rng(seed)
    tissue = rng.integers(3, 45, 40 * 60)
    tissue[:c1], tissue[c1:c1 + c2] = 1, 2
    tissue[c1 + c2:c1 + c2 + 150] = 0  # zeros inside the tissue too
    return np.pad(rng.permutation(tissue).reshape(40, 60).astype(np.uint8), 20)


def dark_target():
    target = np.zeros(256)
    target[20:200] = np.linspace(1.0, 3.0, 180)
    return target / target.sum()


def match(g, image, target, fix=False):
    got = g.run(call, path="degrade.match_histogram", args=(image, target), kwargs={"fix_zero_peak": fix})
    return got["result"]


@check(11, "matching an image to its own histogram is the identity", points=2)
def match_identity(g):
    levels = np.random.default_rng(110).integers(0, 60, (40, 50))
    image = (levels * 4 + 3).astype(np.uint8)  # gaps between levels
    close(match(g, image, hist(image)), image, "image matched to its own histogram", tol=0)


@check(11, "the matched image's CDF follows the target's (within 0.02), the map is monotone", points=2)
def match_follows_target(g):
    source = np.random.default_rng(111).integers(0, 256, (128, 128)).astype(np.uint8)
    target = np.zeros(256)
    target[30:201] = np.minimum(np.arange(171), np.arange(171)[::-1]) + 1.0  # a triangle
    target /= target.sum()
    out = match(g, source, target)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == source.shape, \
        f"got {describe(out)} of {getattr(out, 'dtype', '?')}, expected uint8 {source.shape}"
    gap = np.max(np.abs(np.cumsum(hist(out)) - np.cumsum(target)))
    assert gap < 0.02, f"CDFs differ by up to {gap:.3f}"
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0), \
        "a darker level was mapped above a brighter one"


@check(11, "the output stays within the target's levels and the input is unchanged")
def match_target_levels(g):
    source = np.random.default_rng(112).integers(0, 256, (64, 64)).astype(np.uint8)
    target = np.zeros(256)
    target[[90, 100, 140]] = [0.2, 0.5, 0.3]
    got = g.run(degrade_runs, name="match_histogram", image=source, seeds=[], kwargs=None)
    assert np.array_equal(got["input_after"], source), "the input was changed"
    out = array(match(g, source, target), "output", source.shape)
    assert out.min() >= 90 and out.max() <= 140, \
        f"values {out.min():.0f} to {out.max():.0f}, target levels 90 to 140"


@check(11, "fix_zero_peak: zero padding stays 0; tissue without 0, 1 or 2 matches as if unpadded")
def match_padding_stays_zero(g):
    tissue = np.random.default_rng(113).integers(30, 220, (40, 60)).astype(np.uint8)
    target = np.zeros(256)
    target[60:250] = 1 / 190
    out = array(match(g, np.pad(tissue, 20), target, fix=True), "output", (80, 100))
    assert np.all(out[:20] == 0) and np.all(out[-20:] == 0), "zero padding did not stay 0"
    close(out[20:-20, 20:-20], match(g, tissue, target), "tissue matched with padding and the fix", tol=0)


@check(11, "fix_zero_peak on a dark slice with 0, 1 and 2: the count of 0 becomes 2 c1 - c2 (App. A)",
       points=3)
def match_zero_regression(g):
    image = dark_slice(300, 200, seed=114)  # regression 2 * 300 - 200 = 400 zeros, not the 4150 of the slice
    got = array(match(g, image, dark_target(), fix=True), "output", image.shape)
    want = array(g.expect(match_reference, image, dark_target(), True), "reference")
    wrong = np.abs(got - want) > 0
    assert not wrong.any(), \
        f"{wrong.mean():.0%} of the pixels differ by up to {np.abs(got - want).max():.0f} " \
        "grey levels: count(0) := max(0, 2 count(1) - count(2)) when 0, 1 and 2 all occur"


@check(11, "fix_zero_peak: a line that falls below 0 (2 c1 < c2) gives a count of 0, never a negative one")
def match_zero_clipped(g):
    image = dark_slice(80, 400, seed=115)
    close(match(g, image, dark_target(), fix=True), g.expect(match_reference, image, dark_target(), True),
          "output with count(0) := max(0, 2 * 80 - 400) = 0", tol=0)


@check(11, "fix_zero_peak: without a 2 in the slice the count of 0 is 0 (the line needs 1 and 2)")
def match_zero_needs_two(g):
    image = dark_slice(300, 0, seed=116)
    close(match(g, image, dark_target(), fix=True), g.expect(match_reference, image, dark_target(), True),
          "output with 1 but no 2 in the slice (count(0) := 0)", tol=0)


@check(11, "an all-black slice stays black with fix_zero_peak", hidden=True)
def match_all_black(g):
    black = np.zeros((8, 8), np.uint8)
    close(match(g, black, dark_target(), fix=True), black, "an all-black slice matched with the fix", tol=0)


@check(11, "a target given as counts matches as the same target given as frequencies", hidden=True)
def match_target_counts(g):
    source = np.random.default_rng(117).integers(0, 256, (32, 32)).astype(np.uint8)
    frequencies = dark_target()
    close(match(g, source, frequencies * 12345.0), g.expect(match_reference, source, frequencies, False),
          "output for a target of counts", tol=0)


# ================================================================ 12. the training losses

exercise(
    12, title="Training losses and the Attention Y-Net loss",
    thesis="App. A Eq. 1, §4.3.2, §5.3, App. B Table 2",
    targets=(("train.py", "compute_loss"),),
    objective="Write every training objective of the thesis as one pure function of the output and the "
              "batch, including the Attention Y-Net's weighted sum with unlabelled images.",
    minutes=25,
    task="One function gives every training objective. A segmentation network: BCE on the logits (§4.3.2), "
         "plus the Dice loss when loss is 'bce_dice' (App. B). A pretext run (pretext true): MSE between "
         "sigmoid(logits) and the clean image (§5.3). The Attention Y-Net returns (segmentation logits, "
         "reconstruction in [0, 1]): L = alpha * MSE(reconstruction, x) + (1 - alpha) * "
         "BCE(segmentation, y), "
         "alpha the keyword argument (App. A Eq. 1), where a sample whose mask is -1 (an unlabelled target "
         "image) has a BCE of 0 and the BCE is averaged over the batch; in a pretext run only the "
         "reconstruction's MSE against y.",
    hints=("Sort the cases first: is the output one tensor or a pair, and is it a pretext run? Which term of "
           "Eq. 1 has the factor alpha?",
           "F.binary_cross_entropy_with_logits(..., reduction='none') gives per-pixel terms to average per "
           "sample; multiply by 1 for a labelled sample and 0 for an unlabelled one (and clamp its -1 mask "
           "at 0 first) before the mean over the batch; dice_loss is defined just above."),
    questions=("App. A trains stage 1 with alpha = 0.98. If the reconstruction MSE is about 0.01 and the BCE "
               "about 0.3 early on, which term dominates the loss, and what failure of the two-step Y-Net "
               "training did this extra stage cure according to App. A?",),
    tests=("tests/test_adapt.py::test_unlabelled_samples*",),
)


@probe
def loss_of(output, x, y, kwargs, wrt=()):
    """train.compute_loss(output, x, y, **kwargs) and its gradients with respect to output parts `wrt`."""
    import train
    parts = list(output) if isinstance(output, tuple) else [output]
    for p in parts:
        p.requires_grad_(True)
    loss = train.compute_loss(output, x, y, **kwargs)
    answer = {"loss": loss}
    if wrt and torch.is_tensor(loss) and loss.requires_grad:
        answer["grads"] = torch.autograd.grad(loss, [parts[i] for i in wrt], allow_unused=True)
    return answer


def loss_batch(seed):
    """(logits, reconstruction in (0, 1), x, y) of shape (2, 1, 4, 4), float64."""
    gen = seeded(seed)
    z = randn(gen, 2, 1, 4, 4, std=3.0)
    rec, x = torch.rand(2, 2, 1, 4, 4, generator=gen, dtype=torch.float64)
    y = (torch.rand(2, 1, 4, 4, generator=gen) < 0.4).double()
    return z, rec, x, y


@reference
def bce_reference(z, y, per_sample=False):
    """BCE from its definition on probabilities, float64; per sample or over everything."""
    p = torch.sigmoid(z)
    terms = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    return terms.flatten(1).mean(1) if per_sample else terms.mean()


def loss_value(g, output, x, y, **kwargs):
    kwargs = {"loss": "bce", "pretext": False, "alpha": 0.5, **kwargs}
    got = g.run(loss_of, output=output, x=x, y=y, kwargs=kwargs)
    return array(got["loss"], "loss", ())


@check(12, "segmentation: BCE on the logits; its gradient is (sigmoid(z) - y) / n", points=2)
def loss_bce(g):
    z, _, x, y = loss_batch(120)
    got = g.run(loss_of, output=z, x=x, y=y, kwargs={"loss": "bce", "pretext": False, "alpha": 0.5}, wrt=(0,))
    close(array(got["loss"], "loss", ()), g.expect(bce_reference, z, y), "loss")
    assert got.get("grads"), "the loss is not a tensor that backpropagates to the logits"
    close(got["grads"][0], (torch.sigmoid(z) - y) / z.numel(), "gradient with respect to the logits")


@check(12, "bce_dice adds the Dice loss 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) (App. B)")
def loss_bce_dice(g):
    z, _, x, y = loss_batch(121)
    p = torch.sigmoid(z)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    close(loss_value(g, z, x, y, loss="bce_dice"), g.expect(bce_reference, z, y) + dice, "loss")


@check(12, "pretext: MSE between sigmoid(logits) and the clean image (§5.3)")
def loss_pretext(g):
    z, _, x, _ = loss_batch(122)
    clean = torch.rand(2, 1, 4, 4, generator=seeded(123), dtype=torch.float64)
    close(loss_value(g, z, x, clean, pretext=True), ((torch.sigmoid(z) - clean) ** 2).mean(), "loss")


@check(12, "Attention Y-Net: alpha * MSE(reconstruction, x) + (1 - alpha) * BCE(segmentation, y)", points=2)
def loss_ynet(g):
    z, rec, x, y = loss_batch(124)
    for alpha in (0.3, 0.98):
        want = alpha * ((rec - x) ** 2).mean() + (1 - alpha) * g.expect(bce_reference, z, y)
        close(loss_value(g, (z, rec), x, y, alpha=alpha), want, f"loss at alpha {alpha}")


@check(12, "Attention Y-Net: alpha = 1 trains only the reconstruction, alpha = 0 only the segmentation")
def loss_ynet_extremes(g):
    z, rec, x, y = loss_batch(125)
    for alpha, idle, name in ((1.0, 0, "segmentation"), (0.0, 1, "reconstruction")):
        kwargs = {"loss": "bce", "pretext": False, "alpha": alpha}
        got = g.run(loss_of, output=(z, rec), x=x, y=y, kwargs=kwargs,
                    wrt=(idle,))
        grad = (got.get("grads") or [None])[0]
        assert grad is None or np.abs(grad).max() == 0, f"alpha {alpha}: the {name} still gets a gradient"


@check(12, "Attention Y-Net: an unlabelled sample (mask -1) adds a BCE of 0 and no segmentation gradient",
       points=2)
def loss_unlabelled(g):
    z, rec, x, y = loss_batch(126)
    y[1] = -1.0  # sample 1 has no label (a target-domain image, App. A)
    got = g.run(loss_of, output=(z, rec), x=x, y=y, kwargs={"loss": "bce", "pretext": False, "alpha": 0.3},
                wrt=(0,))
    bce0 = g.expect(bce_reference, z[:1], y[:1])
    close(array(got["loss"], "loss", ()), 0.3 * ((rec - x) ** 2).mean() + 0.7 * bce0 / 2,
          "loss (the BCE of sample 0, averaged over both samples)")
    grad = array((got.get("grads") or [None])[0], "gradient of the segmentation")
    assert np.abs(grad[1]).max() == 0, "the unlabelled sample sends a gradient to the segmentation"


@check(12, "Attention Y-Net pretext: MSE between the reconstruction and the clean target")
def loss_ynet_pretext(g):
    z, rec, x, _ = loss_batch(127)
    clean = torch.rand(2, 1, 4, 4, generator=seeded(128), dtype=torch.float64)
    close(loss_value(g, (z, rec), x, clean, pretext=True), ((rec - clean) ** 2).mean(), "loss")


@check(12, "Attention Y-Net: three samples, the middle one unlabelled, BCE averaged over all three",
       hidden=True)
def loss_unlabelled_three(g):
    gen = seeded(129)
    z, rec, x = randn(gen, 3, 1, 2, 2, std=2.0), torch.rand(3, 1, 2, 2, generator=gen, dtype=torch.float64), \
        torch.rand(3, 1, 2, 2, generator=gen, dtype=torch.float64)
    y = (torch.rand(3, 1, 2, 2, generator=gen) < 0.5).double()
    y[1] = -1.0
    per_sample = g.expect(bce_reference, z, y.clamp(min=0), True)
    want = 0.5 * ((rec - x) ** 2).mean() + 0.5 * (per_sample[0] + per_sample[2]) / 3
    close(loss_value(g, (z, rec), x, y), want, "loss")


# ================================================================ selections

# A 2-hour lab: the ViT core (Eq. 2.1 to the encoder layer), the padding and the metric; 115 minutes.
# The full course: all twelve, about 4.5 hours, e.g. three sessions of 90 minutes.
SELECTIONS = {"lab": (1, 2, 3, 4, 7, 9), "course": tuple(sorted(EXERCISES))}
