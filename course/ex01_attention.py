"""Exercise 1: scaled dot-product attention, Eq. 2.1 for all heads at once.

Thesis: §2.2.1.1, Eq. 2.1, Fig. 2.4 (left); the attention dropout of Vaswani et al. [7].
The checks sweep what the task and attention.MultiHeadSelfAttention allow: any B, h, N, d and d_v
(queries and keys may differ in number), float32 and float64 (bf16 under --amp), scores in the
thousands, eval mode and training with dropout p from 0 to 0.9. Outputs, weights and gradients are
compared with Eq. 2.1 in float64; the dropout is judged by its statistics over 8192 weights.
Shapes: B batch, h heads, N queries (N_k keys), d head width, d_v value width.
"""
import math

import numpy as np
import torch

from judging import (Exercise, agree, array, autocast, check, close, gradients, hoeffding, pair, probe,
                     reference, reference_gradients, seeded, tolerance)

EXERCISE = Exercise(
    1, title="Scaled dot-product attention", thesis="§2.2.1.1, Eq. 2.1, Fig. 2.4 (left)",
    targets=(("attention.py", "scaled_dot_product_attention"),),
    objective="Compute Eq. 2.1 for all heads at once with batched matrix products, and explain why the "
              "scores are divided by sqrt(d_k) before the softmax.",
    minutes=20,
    task="Given per-head queries (B, h, N, d), keys (B, h, N_k, d) and values (B, h, N_k, d_v), return "
         "softmax(QK^T / sqrt(d_k)) V and the attention weights (B, h, N, N_k), in the inputs' dtype. The "
         "scale 1/sqrt(d_k) keeps the softmax from saturating. The weights are returned before dropout "
         "(every row sums to 1); when `training` and `dropout` = p > 0 the output is computed from "
         "dropped-out weights, each kept with probability 1 - p independently and scaled by 1 / (1 - p), "
         "as in Vaswani et al. [7]; outside training dropout does nothing.",
    hints=("Eq. 2.1 is three steps: scores, softmax, product with V. Which axis of the scores belongs to "
           "the keys, the axis over which each query's weights must sum to 1?",
           "Swap the last two axes of k to get (B, h, N, N_k) scores from one batched product; torch.softmax "
           "on the keys' axis is numerically stable for large scores; F.dropout(weights, p, training) does "
           "nothing outside training, and scales the kept weights by 1 / (1 - p) inside it."),
    questions=("§2.2.1.1 scales the scores so that the softmax does not give 'extremely small gradients'. "
               "For q and k with independent unit-variance entries, what is the standard deviation of q.k "
               "when d_k = 64, the full head width of UNETR-2D Mini (D = 64, Table 5.3), and after the "
               "division by sqrt(d_k)?",
               "§2.2.4 gives self-attention a cost of O(n^2 d) per layer. How many scores does one head "
               "compute for a 256 x 256 input with the thesis's 16 x 16 patches, and how many with 8 x 8 "
               "patches?"),
    withheld=(("tests/test_attention.py", "_reference_mhsa"), ("tests/test_vit.py", "_reference_block")),
)


def qkv(B=2, h=3, N=5, d=4, d_v=None, n_keys=None, scale=1.0, seed=0, dtype=torch.float64):
    """Seeded queries, keys and values; `where` names them in a message."""
    g = seeded(seed)
    d_v, n_keys = d if d_v is None else d_v, N if n_keys is None else n_keys
    q = scale * torch.randn(B, h, N, d, generator=g, dtype=torch.float64)
    k, v = (scale * torch.randn(B, h, n_keys, n, generator=g, dtype=torch.float64) for n in (d, d_v))
    keys = "" if n_keys == N else f", N_k={n_keys}"
    where = f"B={B}, h={h}, N={N}{keys}, d={d}, d_v={d_v}, {str(dtype)[6:]}"
    return [t.to(dtype) for t in (q, k, v)], where


@probe
def sdpa(q, k, v, dropout=0.0, training=False, seed=0, amp=False, grad=False):
    """attention.scaled_dot_product_attention; with grad, the gradients of weighted(output)."""
    import attention
    for t in (q, k, v):
        t.requires_grad_(grad)
    torch.manual_seed(seed)
    with autocast(amp):
        result = attention.scaled_dot_product_attention(q, k, v, dropout, training)
    answer = {"result": result}
    if isinstance(result, tuple) and all(torch.is_tensor(t) for t in result):
        answer["dtypes"] = [str(t.dtype)[6:] for t in result]
        if grad:
            answer["grads"] = gradients(result[0], {"q": q, "k": k, "v": v})
    return answer


@reference
def attention_reference(q, k, v):
    """Eq. 2.1 in float64: (output, weights, the largest |score|)."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, N, N_k)
    weights = torch.softmax(scores, dim=-1)  # (B, h, N, N_k)
    return weights @ v, weights, scores.abs().max()


@reference
def attention_gradients(q, k, v):
    """Gradients of weighted(output) with respect to q, k and v, from Eq. 2.1 in float64."""
    return reference_gradients(lambda _, *qkv: attention_reference(*qkv)[0], {"q": q, "k": k, "v": v}, {})


def scale_used(q, k, weights):
    """The factor the graded code multiplied q.k by, read off its weights (None if they are no softmax
    of a multiple of q.k): log w is linear in q.k within each row."""
    s = (q.double() @ k.double().transpose(-2, -1)).numpy().reshape(-1, k.shape[-2])
    logw = np.log(np.clip(weights.reshape(s.shape), 1e-300, None))
    s, logw = s - s.mean(1, keepdims=True), logw - logw.mean(1, keepdims=True)
    if (s * s).sum() < 1e-9:
        return None  # one key, or keys the queries cannot tell apart
    factor = float((s * logw).sum() / (s * s).sum())
    return factor if np.abs(logw - factor * s).max() < 1e-6 else None


def judge_eval(g, tensors, where, amp=False, **kw):
    """Run in eval mode (or with the given dropout and training) and compare output and weights."""
    q, k, v = tensors
    got = g.run(sdpa, where=where, q=q, k=k, v=v, amp=amp, **kw)
    out, weights = pair(got["result"], "(output, weights)", where)
    want_out, want_w, score = g.expect(attention_reference, q, k, v)
    dtype = "bfloat16" if amp else str(q.dtype)[6:]
    weights = array(weights, "weights", want_w.shape, where)
    if np.allclose(weights.sum(-2), 1, atol=1e-4) and not np.allclose(weights.sum(-1), 1, atol=1e-4):
        raise AssertionError(f"weights on {where}: each column sums to 1: the softmax runs over the queries "
                             "(dim -2); Eq. 2.1 normalises each query's scores over the keys (dim -1)")
    factor = scale_used(q, k, weights) if not amp else None
    if factor is not None and abs(factor * math.sqrt(q.shape[-1]) - 1) > 1e-4:
        raise AssertionError(f"weights on {where}: the scores were multiplied by {factor:.4g}; Eq. 2.1 "
                             f"divides them by sqrt(d_k) = sqrt({q.shape[-1]})")
    scale = 1.0 if amp else float(score)  # float32 scores carry errors in proportion to their size
    close(weights, want_w, "weights", where, tolerance(dtype, scale))
    close(out, want_out, "output", where, tolerance(dtype, scale))
    if not amp:
        assert got.get("dtypes") == [dtype, dtype], \
            f"on {where}: output and weights of dtype {got.get('dtypes')}, expected the inputs' {dtype}"
    return got


@check("output and weights equal Eq. 2.1 in eval mode: any B, h, N, d, d_v; float64 and float32",
       points=3)
def sdpa_eval(g):
    for shape, dtype in [(dict(B=2, h=3, N=5, d=4, d_v=3), torch.float64),
                         (dict(B=1, h=1, N=1, d=1), torch.float64),
                         (dict(B=3, h=2, N=7, d=9, d_v=9), torch.float32),
                         (dict(B=2, h=4, N=16, d=64), torch.float32)]:
        tensors, where = qkv(**shape, seed=1, dtype=dtype)
        judge_eval(g, tensors, where + ", eval")


@check("the weights stay a finite softmax over the keys for scores in the thousands (float32)")
def sdpa_large_scores(g):
    tensors, where = qkv(B=2, h=3, N=6, d=16, scale=30.0, seed=2, dtype=torch.float32)
    judge_eval(g, tensors, where + ", scores up to thousands, eval")


@check("gradients with respect to q, k and v equal Eq. 2.1's (float64 and float32)", points=2)
def sdpa_gradients(g):
    for shape, dtype in [(dict(B=2, h=3, N=5, d=4, d_v=3), torch.float64),
                         (dict(B=1, h=2, N=6, d=8), torch.float32)]:
        (q, k, v), where = qkv(**shape, seed=4, dtype=dtype)
        got = g.run(sdpa, where=where + ", eval", q=q, k=k, v=v, grad=True)
        pair(got["result"], "(output, weights)", where)
        for name, want in g.expect(attention_gradients, q, k, v).items():
            close((got.get("grads") or {}).get(name), want, f"gradient of {name}", where + ", eval",
                  tolerance(dtype, 4.0))


def dropout_draws(g, p, seeds, dtype=torch.float64):
    """(outputs, weights, where) in training with dropout p: v is the identity, so the output is the
    dropped-out weights themselves, (seeds, B, h, N, N)."""
    (q, k, _), where = qkv(B=4, h=4, N=16, d=8, seed=6, dtype=dtype)
    v = torch.eye(16, dtype=dtype).expand(4, 4, 16, 16).contiguous()
    where = f"{where}, training, p={p}"
    outs = []
    for seed in seeds:
        out, weights = pair(g.run(sdpa, where=where, q=q, k=k, v=v, dropout=p, training=True,
                                  seed=seed)["result"],
                            "(output, weights)", where)
        outs.append(array(out, "output", (4, 4, 16, 16), where))
    want_w = g.expect(attention_reference, q, k, v)[1]
    close(weights, want_w, "weights (they come back before dropout)", where, tolerance(dtype))
    return np.stack(outs), array(want_w, "reference"), where


@check("dropout in training: each weight kept with probability 1 - p, independently, and scaled by "
       "1/(1 - p); the weights come back before dropout", points=2)
def sdpa_dropout(g):
    for p in (0.0, 0.1, 0.5, 0.9):
        outs, w, where = dropout_draws(g, p, seeds=(7, 8))
        kept = outs != 0  # (seeds, B, h, N, N_k); the weights are all positive
        close(np.where(kept, outs, 0), np.where(kept, w / (1 - p), 0), "kept weights (scaled by 1/(1 - p))",
              where, tolerance("float64"))
        # Hoeffding over the 8192 weights (4096 pairs): a correct body misses by more with chance < 1e-9
        agree(kept.mean(), 1 - p, hoeffding(kept.size), "fraction of weights kept", where)
        across_heads = (kept[:, :, 0] & kept[:, :, 1]).mean()  # two heads, the same places
        agree(across_heads, (1 - p) ** 2, hoeffding(kept[:, :, 0].size),
              "fraction kept in both of two heads (independent draws give (1 - p)^2)", where)
        for axis, what in ((-1, "keys"), (-2, "queries")):  # two neighbours along each axis of the weights
            first, second = np.take(kept, range(0, 16, 2), axis), np.take(kept, range(1, 16, 2), axis)
            agree((first & second).mean(), (1 - p) ** 2, hoeffding(first.size),
                  f"fraction kept at both of two neighbouring {what} (independent draws give (1 - p)^2)",
                  where)


@check("no dropout outside training, whatever p")
def sdpa_eval_dropout(g):
    tensors, where = qkv(B=2, h=2, N=6, d=4, seed=9)
    for p in (0.1, 0.5, 0.9):
        judge_eval(g, tensors, f"{where}, eval, p={p}", dropout=p, training=False)


@check("queries and keys may differ in number: (B, h, N, d_v) and (B, h, N, N_k)", hidden=True)
def sdpa_cross_shapes(g):
    for dtype in (torch.float64, torch.float32):
        tensors, where = qkv(B=1, h=2, N=3, d=4, d_v=5, n_keys=6, seed=10, dtype=dtype)
        judge_eval(g, tensors, where + ", eval")


@check("under bf16 autocast (--amp) output and weights agree within bf16 precision", hidden=True)
def sdpa_bf16(g):
    tensors, where = qkv(B=2, h=2, N=8, d=16, seed=11, dtype=torch.float32)
    judge_eval(g, tensors, where + " under bf16 autocast, eval", amp=True)
