"""Exercise 4: one pre-norm Transformer encoder layer.

Thesis: §2.2.1, Eq. 2.2, Fig. 2.3, Fig. 2.5; pre-norm as ViT [13] and the thesis code (Fig. 2.3 of [7]
normalises after the sum), GELU after both linear maps of the MLP, LayerNorm eps 1e-6.
So that exercise 4 is graded on its own, the probe puts torch's nn.MultiheadAttention (no dropout) in
place of exercise 2's block. The checks sweep D, h, M, B and N, float32 and float64 (bf16 under
--amp), eval and training mode, with and without the weights; they compare outputs and the gradients
of x and every weight with the layer in float64, and check that the input is left as it was (inside
ViTEncoder an in-place residual would make every kept hidden state the last one). In training the
dropout masks are read off the layer's own gradients (a hidden unit that was dropped passes no
gradient to its row of fc1, a dropped output none to its fc2 bias) and the output must be the layer's
with exactly those masks; the share of dropped units must match the rate, within Hoeffding's bound.
Shapes: B batch, N tokens, D hidden size, h heads, M MLP size.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from judging import (Exercise, agree, array, autocast, cast, check, close, describe, gradients, hoeffding,
                     load, pair, probe, randn, reference, reference_gradients, seeded, tolerance, weights_of)

EXERCISE = Exercise(
    4, title="One pre-norm encoder layer", thesis="§2.2.1, Eq. 2.2, Fig. 2.3, Fig. 2.5",
    targets=(("vit.py", "TransformerBlock.forward"),),
    objective="Assemble an encoder layer from its residual branches, and tell pre-norm (the thesis code, "
              "ViT [13]) from post-norm (Fig. 2.3).",
    minutes=20,
    task="x = x + MHSA(LN1(x)), then x = x + MLP(LN2(x)), where the MLP of the thesis code is fc1, GELU, "
         "dropout, fc2, GELU, dropout, each dropout being self.drop (active in training only). The layer is "
         "pre-norm as in ViT [13]: each LayerNorm sits inside its residual branch, not after the sum as in "
         "Fig. 2.3. Leave the input tensor as it is: ViTEncoder keeps every layer's output. With "
         "return_weights, also return the attention weights (B, h, N, N).",
    hints=("Write the two residual updates as two lines of the form x = x + branch(x); what goes inside "
           "each branch, and what stays outside it on the residual path?",
           "Each branch starts with its own LayerNorm and ends before the addition; nothing touches the "
           "sums themselves, and `x += ...` would change the caller's tensor. The MLP branch alternates "
           "linear map, self.act and self.drop, twice. self.attn gives its weights too when asked with "
           "return_weights=True. Eq. 2.2 has one ReLU; the thesis code puts GELU after both linear maps."),
    questions=("Table 5.4: UNETR-2D Mini (4 layers) scores 0.861 on Lucchi++ and Base (12 layers) 0.853. "
               "What does §5.2 give as the reasons why a smaller Transformer does as well here?",
               "In a pre-norm stack, what path does the input of layer 1 have to the output of layer L "
               "that a post-norm stack (Fig. 2.3) lacks?"),
    withheld=(("tests/test_vit.py", "_reference_block"),),
)


class TorchAttention(nn.Module):
    """Exercise 2's job done by torch.nn.MultiheadAttention (no dropout), with the block's interface."""

    def __init__(self, embed_dim, n_heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed_dim, n_heads, batch_first=True)

    def forward(self, x, return_weights=False):
        out, weights = self.mha(x, x, x, need_weights=True, average_attn_weights=False)
        return (out, weights) if return_weights else out


def layer_case(D, h, M, B, N, dtype=torch.float64, seed=40, std=1.0):
    """(state, x, where): weights with non-trivial norms and biases, and a batch of tokens of spread std."""
    state = weights_of({"fc1.weight": (M, D), "fc1.bias": (M,), "fc2.weight": (D, M), "fc2.bias": (D,),
                        "attn.mha.in_proj_weight": (3 * D, D), "attn.mha.in_proj_bias": (3 * D,),
                        "attn.mha.out_proj.weight": (D, D), "attn.mha.out_proj.bias": (D,)}, seed)
    g = seeded(seed + 1)
    for norm in ("norm1", "norm2"):
        state[f"{norm}.weight"], state[f"{norm}.bias"] = 1 + randn(g, D, std=0.3), randn(g, D, std=0.3)
    x = randn(g, B, N, D, std=std, dtype=dtype)
    spread = "" if std == 1 else f", tokens of std {std:g}"
    return state, x, f"D={D}, h={h}, M={M}, B={B}, N={N}{spread}, {str(dtype)[6:]}"


def build(vit, D, h, M, state, dtype, dropout=0.0):
    block = vit.TransformerBlock(D, h, M, dropout=dropout, head_dim=D // h)
    block.attn = TorchAttention(D, h)
    return load(block, state, dtype)


@probe
def encoder_layer(D, h, M, state, x, dropout=0.0, train=False, return_weights=False, grad=False,
                  amp=False):
    """vit.TransformerBlock with torch's attention and the grader's weights; the input afterwards too."""
    import vit
    block = build(vit, D, h, M, state, torch.float32 if amp else x.dtype, dropout).train(train)
    x_in = x.clone().requires_grad_(grad)
    with autocast(amp):
        result = block(x_in, return_weights=return_weights)
    answer = {"result": result, "input_after": x_in.detach()}
    if grad:
        answer["grads"] = gradients(result, {"x": x_in, **dict(block.named_parameters())})
    return answer


@probe
def two_layers(D, h, M, state, x):
    """Two layers in a row, as ViTEncoder runs them: (input, first output, second output) afterwards."""
    import vit
    block = build(vit, D, h, M, state, x.dtype).eval()
    first = block(x)
    second = block(first)
    return {"kept": [x, first, second]}


@probe
def dropout_draws(D, h, M, state, x, dropout, seeds):
    """In training, per seed: the output and the gradients of weighted(output) for fc1's weight and fc2's
    bias, from which the grader reads the dropout masks."""
    import vit
    block = build(vit, D, h, M, state, x.dtype, dropout).train()
    draws = []
    for seed in seeds:
        torch.manual_seed(seed)
        out = block(x)
        grads = gradients(out, {"fc1": block.fc1.weight, "fc2": block.fc2.bias})
        draws.append({"out": out, "grads": grads})
    return {"draws": draws}


@reference
def layer_reference(state, x, h, masks=None, p=0.0):
    """The pre-norm layer in float64 -> (output, weights); `masks` (m1 (B, N, M), m2 (B, N, D)) are the
    dropout masks of the MLP (1 kept, 0 dropped), the kept values scaled by 1 / (1 - p)."""
    state, x = cast(state, torch.float64), x.double()
    D = x.shape[-1]

    def norm(i, t):
        return F.layer_norm(t, (D,), state[f"norm{i}.weight"], state[f"norm{i}.bias"], eps=1e-6)
    ln1 = norm(1, x).transpose(0, 1)  # (N, B, D), torch's functional attention is sequence first
    a, weights = F.multi_head_attention_forward(
        ln1, ln1, ln1, D, h, state["attn.mha.in_proj_weight"], state["attn.mha.in_proj_bias"], None, None,
        False, 0.0, state["attn.mha.out_proj.weight"], state["attn.mha.out_proj.bias"], training=False,
        need_weights=True, average_attn_weights=False)
    y = x + a.transpose(0, 1)  # (B, N, D)
    hidden = F.gelu(F.linear(norm(2, y), state["fc1.weight"], state["fc1.bias"]))  # (B, N, M)
    if masks is not None:
        hidden = hidden * torch.as_tensor(masks[0]) / (1 - p)
    mlp = F.gelu(F.linear(hidden, state["fc2.weight"], state["fc2.bias"]))  # (B, N, D)
    if masks is not None:
        mlp = mlp * torch.as_tensor(masks[1]) / (1 - p)
    return y + mlp, weights


@reference
def layer_gradients(state, x, h):
    return reference_gradients(lambda weights, x: layer_reference(weights, x, h)[0], {"x": x}, state)


SIZES = [(8, 2, 16, 2, 6, torch.float64), (6, 3, 10, 1, 3, torch.float64), (16, 4, 32, 3, 1, torch.float32),
         (4, 1, 8, 2, 5, torch.float32)]
SMALL = 0.003  # tokens of this spread make LayerNorm's eps (1e-6, not torch's 1e-5) show


@check("eval mode: y = x + MHSA(LN1(x)), then y + MLP(LN2(y)) with GELU after both linears and LayerNorm "
       "eps 1e-6; any D, h, M, B, N; float64 and float32; tokens of any spread", points=3)
def layer_eval(g):
    spreads = [size + (1.0,) for size in SIZES] + [(8, 2, 16, 2, 3, torch.float64, SMALL)]
    for D, h, M, B, N, dtype, std in spreads:
        state, x, where = layer_case(D, h, M, B, N, dtype, std=std)
        got = g.run(encoder_layer, where=where + ", eval", D=D, h=h, M=M, state=state, x=x)["result"]
        close(got, g.expect(layer_reference, state, x, h)[0], "output", where + ", eval", tolerance(dtype))


@check("return_weights also returns the attention weights (B, h, N, N); without it the output alone")
def layer_weights(g):
    D, h, M, B, N, dtype = SIZES[0]
    state, x, where = layer_case(D, h, M, B, N, dtype, seed=42)
    out, weights = pair(g.run(encoder_layer, where=where + ", eval", D=D, h=h, M=M, state=state, x=x,
                              return_weights=True)["result"],
                        "(output, weights)", where)
    want_out, want_w = g.expect(layer_reference, state, x, h)
    close(weights, want_w, "weights", where + ", eval", tolerance(dtype))
    close(out, want_out, "output with return_weights", where + ", eval", tolerance(dtype))


@check("gradients of x and every weight (both norms, the attention, fc1, fc2) equal the reference's",
       points=2)
def layer_gradients_check(g):
    for D, h, M, B, N, dtype in (SIZES[0], SIZES[2]):
        state, x, where = layer_case(D, h, M, B, N, dtype, seed=44)
        got = g.run(encoder_layer, where=where + ", eval", D=D, h=h, M=M, state=state, x=x, grad=True)
        assert got.get("grads") is not None, \
            f"on {where}: got {describe(got['result'])}, expected an output that backpropagates"
        for name, want in g.expect(layer_gradients, state, x, h).items():
            close(got["grads"].get(name), want, f"gradient of {name}", where + ", eval",
                  tolerance(dtype, 4.0))


@check("the input is left as it was: two layers in a row keep their own outputs, as ViTEncoder keeps "
       "every hidden state")
def layer_keeps_input(g):
    D, h, M, B, N, dtype = SIZES[0]
    state, x, where = layer_case(D, h, M, B, N, dtype, seed=46)
    kept = g.run(two_layers, where=where + ", eval", D=D, h=h, M=M, state=state, x=x)["kept"]
    first = g.expect(layer_reference, state, x, h)[0]
    second = g.expect(layer_reference, state, first, h)[0]
    for what, got, want in zip(("the first layer's input", "the first layer's output", "the second output"),
                               kept, (x, first, second)):
        close(got, want, f"{what}, after both layers ran", where + ", eval", tolerance(dtype))


def masks_of(draw, p, where):
    """The dropout masks a training draw used, read off its gradients: m1 (1, 1, M), m2 (1, 1, D)."""
    grads = draw.get("grads") or {}
    fc1, fc2 = grads.get("fc1"), grads.get("fc2")
    assert fc1 is not None and fc2 is not None, f"on {where}: no gradient reached fc1 or fc2"
    m2 = (np.abs(array(fc2, "gradient of fc2.bias")) > 0).astype(float)
    m1 = (np.abs(array(fc1, "gradient of fc1.weight")).sum(1) > 0).astype(float) if m2.any() else None
    return m1, m2


@check("training: self.drop acts after each GELU of the MLP with the layer's rate, and nowhere else (the "
       "output is the layer's with the masks its own gradients show)", points=2)
def layer_dropout(g):
    state, x, where = layer_case(8, 2, 16, 1, 1, seed=48)
    for p in (0.1, 0.5):
        here = f"{where}, training, dropout={p}"
        draws = g.run(dropout_draws, where=here, D=8, h=2, M=16, state=state, x=x, dropout=p,
                      seeds=list(range(64)))
        dropped1, dropped2 = [], []
        for seed, draw in enumerate(draws["draws"]):
            m1, m2 = masks_of(draw, p, here)
            m1 = np.ones(16) if m1 is None else m1  # every output dropped: the hidden mask shows nowhere
            want = g.expect(layer_reference, state, x, 2, (m1[None, None], m2[None, None]), p)[0]
            close(draw["out"], want, f"output of draw {seed} (fc1, GELU, drop, fc2, GELU, drop)", here,
                  tolerance("float64"))
            dropped1.append(1 - m1)
            dropped2.append(1 - m2)
        for what, dropped in (("hidden units of the MLP dropped", dropped1),
                              ("MLP outputs dropped", dropped2)):
            share = np.concatenate(dropped)
            agree(share.mean(), p, hoeffding(share.size), f"share of {what}", here)


@check("eval mode ignores the dropout")
def layer_eval_dropout(g):
    D, h, M, B, N, dtype = SIZES[1]
    state, x, where = layer_case(D, h, M, B, N, dtype, seed=50)
    got = g.run(encoder_layer, where=where + ", eval, dropout=0.5", D=D, h=h, M=M, state=state, x=x,
                dropout=0.5)["result"]
    close(got, g.expect(layer_reference, state, x, h)[0], "output", where + ", eval, dropout=0.5",
          tolerance(dtype))


@check("UNETR-2D Mini's sizes (D = 64, h = 4, M = 256, 16 tokens), and under bf16 autocast (--amp)",
       hidden=True)
def layer_mini(g):
    for amp in (False, True):
        state, x, where = layer_case(64, 4, 256, 1, 16, torch.float32, seed=52)
        where += " under bf16 autocast" if amp else ""
        got = g.run(encoder_layer, where=where, D=64, h=4, M=256, state=state, x=x, amp=amp)["result"]
        close(got, g.expect(layer_reference, state, x, 4)[0], "output", where + ", eval",
              tolerance("bfloat16" if amp else "float32"))
