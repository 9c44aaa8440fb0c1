"""Exercise 2: the multi-head split and merge of Fig. 2.4 (right).

Thesis: §2.2.1.1, Fig. 2.4 (right); the full-width heads of the thesis code (Keras key_dim = D,
Table 5.3) and the Vaswani layout d = D / h of [7].
So that exercise 2 is graded on its own, the probe puts a stand-in in place of exercise 1's
scaled_dot_product_attention: like attention it treats each sample and head on its own and its
dropout acts in training only, but it is no attention (no softmax, no scale), so it gives exercise 1
away to nobody. The checks sweep the head layouts (d = D / h, d = D, any other d), B, N, float32 and
float64 (bf16 under --amp), eval and training with the layer's dropout, with and without the weights,
and compare outputs and the gradients of x and every projection with the layer in float64.
Shapes: B batch, N tokens, D hidden size, h heads, d head width.
"""
import torch

from judging import (Exercise, array, autocast, cast, check, close, describe, gradients, load, pair, probe,
                     randn, reference, reference_gradients, replaced, seeded, tolerance, weights_of)

EXERCISE = Exercise(
    2, title="Multi-head split and merge", thesis="§2.2.1.1, Fig. 2.4 (right)",
    targets=(("attention.py", "MultiHeadSelfAttention.forward"),),
    objective="Split projected features into heads and merge them back with view, transpose and reshape, "
              "for both the thesis code's full-width heads and the Vaswani layout.",
    minutes=25,
    task="Project x (B, N, D) to queries, keys and values with q_proj, k_proj and v_proj, split the h*d "
         "features into h heads (head i owns features i*d to (i+1)*d), run scaled_dot_product_attention on "
         "all heads at once (with self.dropout and self.training), concatenate the heads back to (B, N, h*d) "
         "and apply out_proj. With return_weights, also return the weights (B, h, N, N). Every layout must "
         "work: full-width heads d = D (the thesis code), d = D / h (Vaswani et al.) and any other head_dim. "
         "The checks put a stand-in in place of scaled_dot_product_attention (exercise 1): call it.",
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
    withheld=(("tests/test_attention.py", "_reference_mhsa"), ("tests/test_vit.py", "_reference_block")),
)


def standin_attention(q, k, v, dropout=0.0, training=False):
    """Stands in for exercise 1 (not attention): each sample and head mixes its values with the map
    sigmoid(q k^T) / N_k, scaled by 1 - p in training with dropout p. -> (B, h, N, d), (B, h, N, N_k)"""
    weights = torch.sigmoid(q @ k.transpose(-2, -1)) / k.shape[-2]  # (B, h, N, N_k)
    mixed = weights * (1 - dropout) if training else weights
    return mixed @ v, weights


def layer_state(D, h, d, seed):
    inner = h * d
    shapes = {f"{p}_proj.{w}": ((inner, D) if w == "weight" else (inner,)) for p in "qkv"
              for w in ("weight", "bias")}
    return weights_of({**shapes, "out_proj.weight": (D, inner), "out_proj.bias": (D,)}, seed)


def case(D, h, d, B, N, dtype=torch.float64, seed=10):
    """(state, x, where) of one input; `where` names the layout, the sizes and the dtype."""
    layout = "full width" if d == D else "d = D / h" if d * h == D else "another head_dim"
    x = randn(seeded(seed + 1), B, N, D, dtype=dtype)
    return layer_state(D, h, d, seed), x, f"D={D}, h={h}, d={d} ({layout}), B={B}, N={N}, {str(dtype)[6:]}"


@probe
def mhsa(D, h, d, state, x, dropout=0.0, train=False, return_weights=True, grad=False, amp=False):
    """attention.MultiHeadSelfAttention with the grader's weights, the stand-in in place of exercise 1."""
    import attention
    dtype = torch.float32 if amp else x.dtype
    m = load(attention.MultiHeadSelfAttention(D, h, head_dim=None if d == D else d, dropout=dropout),
             state, dtype).train(train)
    x.requires_grad_(grad)
    with replaced(attention, "scaled_dot_product_attention", standin_attention), autocast(amp):
        result = m(x, return_weights=return_weights)
    out = result[0] if isinstance(result, tuple) else result
    answer = {"result": result}
    if grad:
        answer["grads"] = gradients(out, {"x": x, **dict(m.named_parameters())})
    return answer


@reference
def layer_reference(state, x, h, d, dropout=0.0, training=False):
    """Fig. 2.4 (right) in float64 around the stand-in: head i takes features i*d to (i+1)*d of each
    projection; the heads' outputs are concatenated in head order and projected. -> (out, weights)"""
    x, state = x.double(), cast(state, torch.float64)
    heads = []
    for p in "qkv":
        w, b = state[f"{p}_proj.weight"], state[f"{p}_proj.bias"]
        heads.append(torch.stack([x @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(h)], 1))
    out, weights = standin_attention(*heads, dropout, training)  # (B, h, N, d), (B, h, N, N)
    merged = torch.cat([out[:, i] for i in range(h)], dim=-1)  # (B, N, h*d)
    return merged @ state["out_proj.weight"].T + state["out_proj.bias"], weights  # (B, N, D)


@reference
def layer_gradients(state, x, h, d):
    """Gradients of weighted(output) with respect to x and every weight, from layer_reference."""
    return reference_gradients(lambda weights, x: layer_reference(weights, x, h, d)[0], {"x": x}, state)


LAYOUTS = [(12, 3, 4, 2, 5, torch.float64), (8, 4, 8, 3, 4, torch.float64),
           (6, 2, 5, 1, 1, torch.float32), (16, 4, 16, 2, 7, torch.float32)]


@check("eval mode: the output equals the layer around the attention (split into heads, attention on all "
       "heads, merged, out_proj) for every head layout; float64 and float32", points=3)
def mhsa_eval(g):
    for D, h, d, B, N, dtype in LAYOUTS:
        state, x, where = case(D, h, d, B, N, dtype)
        out, _ = pair(g.run(mhsa, where=where + ", eval", D=D, h=h, d=d, state=state, x=x)["result"],
                      "(output, weights)", where)
        close(out, g.expect(layer_reference, state, x, h, d)[0], "output", where + ", eval",
              tolerance(dtype))


@check("return_weights gives the attention's weights (B, h, N, N); without it the output alone")
def mhsa_return_weights(g):
    for D, h, d, B, N, dtype in LAYOUTS[:2]:
        state, x, where = case(D, h, d, B, N, dtype, seed=20)
        out, weights = pair(g.run(mhsa, where=where + ", eval", D=D, h=h, d=d, state=state, x=x)["result"],
                            "(output, weights)",
                            where)
        want_out, want_w = g.expect(layer_reference, state, x, h, d)
        close(weights, want_w, "weights", where + ", eval", tolerance(dtype))
        alone = g.run(mhsa, where=where + ", without return_weights", D=D, h=h, d=d, state=state, x=x,
                      return_weights=False)["result"]
        assert not isinstance(alone, (tuple, list)), \
            f"on {where}, without return_weights: got {describe(alone)}, expected the output alone"
        close(alone, want_out, "output without return_weights", where, tolerance(dtype))


@check("training mode: the attention gets the layer's dropout and training flag, and nothing else is "
       "dropped; eval mode ignores the dropout", points=2)
def mhsa_modes(g):
    for p in (0.1, 0.5):
        for train in (True, False):
            state, x, where = case(12, 3, 4, 2, 5, seed=30)
            where += f", {'training' if train else 'eval'}, dropout={p}"
            got = g.run(mhsa, where=where, D=12, h=3, d=4, state=state, x=x, dropout=p, train=train)
            out, _ = pair(got["result"], "(output, weights)", where)
            want = g.expect(layer_reference, state, x, 3, 4, p, train)[0]
            close(out, want, "output", where, tolerance("float64"))


@check("gradients reach x and every projection (q, k, v, out) as in the reference (float64 and float32)",
       points=2)
def mhsa_gradients(g):
    for D, h, d, B, N, dtype in (LAYOUTS[0], LAYOUTS[3]):
        state, x, where = case(D, h, d, B, N, dtype, seed=40)
        got = g.run(mhsa, where=where + ", eval", D=D, h=h, d=d, state=state, x=x, return_weights=False,
                    grad=True)
        assert got.get("grads") is not None, \
            f"on {where}: got {describe(got['result'])}, expected an output tensor that backpropagates"
        for name, want in g.expect(layer_gradients, state, x, h, d).items():
            close(got["grads"].get(name), want, f"gradient of {name}", where + ", eval",
                  tolerance(dtype, 4.0))


@check("UNETR-2D Mini's layout (D = 64, h = 4, full-width heads), and under bf16 autocast (--amp)",
       hidden=True)
def mhsa_mini(g):
    for amp in (False, True):
        state, x, where = case(64, 4, 64, 1, 16, torch.float32, seed=50)
        where += " under bf16 autocast" if amp else ""
        out, _ = pair(g.run(mhsa, where=where, D=64, h=4, d=64, state=state, x=x, amp=amp)["result"],
                      "(output, weights)",
                      where)
        want = g.expect(layer_reference, state, x, 4, 64)[0]
        close(array(out, "output"), want, "output", where + ", eval",
              tolerance("bfloat16" if amp else "float32"))
