"""Exercise 5: the UNETR-2D skips: tokens folded onto the patch grid, the taps, the blue blocks.

Thesis: §2.2.5, §3.1, §5.1.2, Fig. 2.6, Table 5.3 (the skip step S_m), Table 5.1 (the activations).
The checks sweep the grids (square and oblong, any B and D), the encoder depths, skip steps and patch
sides of Table 5.3 and others at every level, and the blue block's settings the models use: each
activation (relu, elu, gelu), BatchNorm on and off, eval and training mode, with the dropout that
YNETR-2D's skip paths carry. vit_skip's skip paths are swapped for known maps (level l: x -> (l + 2) x
+ l), so that the output shows which hidden state was read, whichever way it was folded; a blue
block is compared with the layer in float64, in training by the masks its zeros show.
Shapes: B batch, N tokens, D hidden size, P patch side, C channels, H x W image.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from judging import (Exercise, agree, array, autocast, batch_norm_stats, cast, check, close, gradients,
                     hoeffding, load, probe, randn, reference, reference_gradients, seeded, tolerance,
                     weighted, weights_of)

EXERCISE = Exercise(
    5, title="UNETR-2D skips: reshape, taps, blue blocks",
    thesis="§2.2.5, §3.1, §5.1.2, Fig. 2.6, Table 5.3",
    targets=(("vit.py", "tokens_to_image"), ("unetr2d.py", "ViTSide.vit_skip"),
             ("unetr2d.py", "BlueBlock.forward")),
    objective="Fold tokens back onto the patch grid and wire the UNETR-2D skip connections: which encoder "
              "layer feeds which decoder level, through how many blue blocks.",
    minutes=30,
    task="Level l of UNETR-2D (1 <= l < K) reads the output of encoder layer S_m * l (z3, z6, z9 for Base), "
         "folds its N tokens back onto the (H/P, W/P) patch grid and brings it to H / 2^l with K - l blue "
         "blocks; level 0 is a double block on the raw input. Write tokens_to_image (token n lands at "
         "divmod(n, W/P); grid is H/P or (H/P, W/P)), ViTSide.vit_skip (self.skip_layers holds the 1-based "
         "layer numbers S_m * l, self.skips[l] the blocks of level l) and BlueBlock.forward (transpose "
         "conv, then the conv block self.conv with its BatchNorm, activation and dropout, whichever the "
         "model chose).",
    hints=("tokens_to_image undoes the patch embedding's flattening of the grid; vit_skip is an index lookup "
           "plus two calls; a blue block is two of its own attributes applied in order.",
           "The tokens are the grid read row by row: give N its two grid axes and move D to the channel "
           "place. hidden[i] is the output of layer i + 1, while self.skip_layers holds layer numbers. "
           "self.conv is a whole conv block (conv, norm, activation, dropout): call it, do not rebuild it."),
    questions=("With S_m = 3 (Base, Table 5.3) and K = 4, which encoder layers feed levels 1, 2 and 3 "
               "and the bottleneck, and how many blue blocks does each level's skip use?",
               "YNETR-2D reuses these skips beside a CNN encoder. Table 5.4 has it beat the U-Net on "
               "Kasthuri++ (0.917 vs 0.910) but not on Lucchi++ (0.880 to 0.894 vs 0.903). The thesis does "
               "not settle why: which explanation from §5.2 (small objects, local detail, the CNN encoder) "
               "fits, and which experiment would test it?"),
    withheld=(("tests/test_unetr.py", "grid_image"),),
)


# ---------------------------------------------------------------- tokens_to_image

@probe
def fold_tokens(z, grid):
    import vit
    z.requires_grad_(True)
    result = vit.tokens_to_image(z, grid)
    dtype = str(getattr(result, "dtype", ""))[6:]
    return {"result": result, "grads": gradients(result, {"z": z}), "dtype": dtype}


@reference
def fold_reference(z, gh, gw):
    """Row-major tokens on the (gh, gw) grid, with the gradient of weighted(folded) for z."""
    z = z.double().clone().requires_grad_(True)
    folded = z.transpose(1, 2).reshape(z.shape[0], z.shape[2], gh, gw)  # (B, D, H/P, W/P)
    return folded, torch.autograd.grad(weighted(folded), z)[0]


@check("tokens_to_image puts token n at (n // (W/P), n % (W/P)) on square and oblong grids, any B and D; "
       "the tokens' gradient is unfolded the same way", points=2)
def fold_row_major(g):
    for B, D, grid, dtype in [(2, 3, 3, torch.float64), (2, 3, (2, 4), torch.float64),
                              (1, 1, (1, 5), torch.float32), (3, 5, (3, 4), torch.float32)]:
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        z = torch.arange(B * gh * gw * D, dtype=dtype).view(B, gh * gw, D)
        where = f"B={B}, D={D}, grid {grid!r} ({gh}x{gw}), {str(dtype)[6:]}"
        got = g.run(fold_tokens, where=where, z=z, grid=grid)
        want, want_grad = g.expect(fold_reference, z, gh, gw)
        got_fold = array(got["result"], "folded tokens", want.shape, where)
        for n in range(gh * gw):
            close(got_fold[:, :, n // gw, n % gw], z[:, n], f"token {n} (row-major, (B, D, H/P, W/P))",
                  where)
        close((got.get("grads") or {}).get("z"), want_grad, "gradient of the tokens", where,
              tolerance(dtype))
        assert got["dtype"] == str(dtype)[6:], \
            f"folded tokens on {where}: dtype {got['dtype']}, expected the tokens' {str(dtype)[6:]}"


# ---------------------------------------------------------------- vit_skip

class KnownMap(nn.Module):
    """Stands in for the blocks of level l's skip path: x -> (l + 2) x + l, so the output shows what it
    read. It sits in an nn.Sequential, as the blue blocks do, so that calling the path and running its
    blocks one by one give the same."""

    def __init__(self, level):
        super().__init__()
        self.level = level

    def forward(self, x):
        return (self.level + 2) * x + self.level


@probe
def vit_skip(n_layers, step, patch, img, level, hidden, x):
    """unetr2d.ViTSide.vit_skip of a tiny UNETR-2D (D = 8) whose skip paths are the known maps."""
    import unetr2d
    import vit
    name = f"exercise-{n_layers}-{step}"
    vit.CONFIGS[name] = vit.ViTConfig(n_layers=n_layers, embed_dim=8, mlp_dim=8, n_heads=1, skip_step=step)
    try:
        model = unetr2d.UNETR2D(name, filters=2, img_size=img, patch_size=patch).double()
    finally:
        del vit.CONFIGS[name]
    model.skips = nn.ModuleList(nn.Sequential(KnownMap(level)) for level in range(model.n_levels))
    return {"result": model.vit_skip(level, hidden, x)}


@reference
def skip_candidates(hidden, grid, level):
    """What level l's known map gives for each hidden state, folded row-major onto the grid."""
    folded = [h.transpose(1, 2).reshape(h.shape[0], h.shape[2], grid, grid) for h in hidden]  # (B, D, g, g)
    return [(level + 2) * f + level for f in folded]


def taps_case(n_layers, step, patch, img):
    """Per level: compare the output with the known map of each hidden state, to name the one read."""
    grid, n_levels = img // patch, int(math.log2(patch))
    gen = seeded(60 + n_layers)
    x = torch.rand(2, 1, img, img, generator=gen, dtype=torch.float64)
    hidden = [randn(gen, 2, grid * grid, 8) for _ in range(n_layers)]
    return x, hidden, grid, n_levels, f"{n_layers} layers, S_m={step}, P={patch}, img_size={img}"


def judge_taps(g, n_layers, step, patch, img):
    x, hidden, grid, n_levels, where = taps_case(n_layers, step, patch, img)
    for level in range(1, n_levels):
        here = f"{where}, level {level}"
        got = array(g.run(vit_skip, where=here, n_layers=n_layers, step=step, patch=patch, img=img,
                          level=level,
                          hidden=hidden, x=x)["result"], "output", (2, 8, grid, grid), here)
        candidates = [array(c, "reference") for c in g.expect(skip_candidates, hidden, grid, level)]
        read = [i + 1 for i, c in enumerate(candidates) if np.abs(got - c).max() < 1e-9]
        assert read, f"on {here}: the output is no hidden state folded row-major through skips[{level}] " \
                     "(is tokens_to_image right?)"
        assert read == [step * level], \
            f"on {here}: read layer {read[0]} (hidden[{read[0] - 1}]), expected layer S_m * l = " \
            f"{step * level} (hidden[{step * level - 1}])"


@check("vit_skip at level l >= 1 folds hidden state S_m * l (1-based) and passes it through skips[l], for "
       "every level of several depths, skip steps and patch sides", points=2)
def skip_taps(g):
    for n_layers, step, patch, img in [(4, 1, 8, 16), (7, 3, 8, 16), (8, 2, 16, 32)]:
        judge_taps(g, n_layers, step, patch, img)


@check("vit_skip at level 0 is skips[0] on the raw input")
def skip_level_zero(g):
    x, hidden, _, _, where = taps_case(4, 1, 8, 16)
    got = g.run(vit_skip, where=where + ", level 0", n_layers=4, step=1, patch=8, img=16, level=0,
                hidden=hidden, x=x)["result"]
    close(got, 2 * x, "output (what skips[0] gives for the raw image)", where + ", level 0")


# ---------------------------------------------------------------- blue blocks

ACTIVATIONS = {"relu": F.relu, "elu": F.elu, "gelu": F.gelu}


def blue_case(batch_norm, activation, dtype=torch.float64, seed=64, shape=(2, 3, 4, 5), out_ch=3):
    in_ch = shape[1]
    state = weights_of({"up.weight": (in_ch, out_ch, 2, 2), "up.bias": (out_ch,),
                        "conv.conv.weight": (out_ch, out_ch, 3, 3), "conv.conv.bias": (out_ch,)}, seed)
    if batch_norm:
        batch_norm_stats(state, "conv.norm", out_ch, seed + 1)
    x = randn(seeded(seed + 2), *shape, dtype=dtype)
    where = f"{activation}, BatchNorm {'on' if batch_norm else 'off'}, x {tuple(shape)}, {str(dtype)[6:]}"
    return state, x, where


@probe
def blue_block(batch_norm, activation, state, x, dropout=0.0, train=False, seeds=(0,), grad=False,
               amp=False):
    """unetr2d.BlueBlock with the grader's weights, once per seed; with grad, gradients (first seed)."""
    import unetr2d
    block = unetr2d.BlueBlock(x.shape[1], state["up.bias"].shape[0], batch_norm=batch_norm,
                              activation=activation, dropout=dropout)
    block = load(block, state, torch.float32 if amp else x.dtype).train(train)
    x.requires_grad_(grad)
    outs = []
    for seed in seeds:
        torch.manual_seed(seed)
        with autocast(amp):
            outs.append(block(x))
    answer = {"results": outs}
    if grad:
        answer["grads"] = gradients(outs[0], {"x": x, **dict(block.named_parameters())})
    return answer


@reference
def blue_reference(state, x, batch_norm, activation, train=False):
    """Transpose conv 2x2 stride 2, conv 3x3 'same', [BatchNorm eps 1e-3: running statistics in eval, the
    batch's in training], the activation; float64."""
    state, x = cast(state, torch.float64), x.double()
    y = F.conv_transpose2d(x, state["up.weight"], state["up.bias"], stride=2)  # (B, C_out, 2H, 2W)
    y = F.conv2d(y, state["conv.conv.weight"], state["conv.conv.bias"], padding=1)  # (B, C_out, 2H, 2W)
    if batch_norm:
        y = F.batch_norm(y, state["conv.norm.running_mean"].clone(), state["conv.norm.running_var"].clone(),
                         state["conv.norm.weight"], state["conv.norm.bias"], training=train, eps=1e-3)
    return ACTIVATIONS[activation](y)


@reference
def blue_gradients(state, x, batch_norm, activation):
    def output(weights, x):
        return blue_reference(weights, x, batch_norm, activation)
    return reference_gradients(output, {"x": x}, state)


@check("a blue block is a transpose conv, then its conv block (conv 3x3, BatchNorm when on, the activation) "
       "for relu, elu and gelu, in eval mode; the gradients of x and every weight too", points=2)
def blue_eval(g):
    for batch_norm, activation, dtype in [(True, "relu", torch.float64), (False, "elu", torch.float64),
                                          (True, "gelu", torch.float32), (True, "elu", torch.float32)]:
        state, x, where = blue_case(batch_norm, activation, dtype)
        got = g.run(blue_block, where=where + ", eval", batch_norm=batch_norm, activation=activation,
                    state=state, x=x, grad=True)
        close(got["results"][0], g.expect(blue_reference, state, x, batch_norm, activation), "output",
              where + ", eval", tolerance(dtype))
        want = g.expect(blue_gradients, state, x, batch_norm, activation)
        for name, w in want.items():
            close((got.get("grads") or {}).get(name), w, f"gradient of {name}", where + ", eval",
                  tolerance(dtype, 4.0))


@check("in training a blue block's BatchNorm uses the batch's statistics and its conv block's dropout drops "
       "each value with the block's rate, scaling the rest by 1/(1 - p)", points=2)
def blue_training(g):
    for batch_norm, activation, p in [(True, "elu", 0.0), (True, "gelu", 0.5), (False, "elu", 0.2)]:
        state, x, where = blue_case(batch_norm, activation, seed=70, shape=(2, 3, 4, 5))
        where += f", training, dropout={p}"
        outs = g.run(blue_block, where=where, batch_norm=batch_norm, activation=activation, state=state,
                     x=x, dropout=p,
                     train=True, seeds=[0, 1, 2, 3])["results"]
        want = array(g.expect(blue_reference, state, x, batch_norm, activation, True), "reference")
        outs = np.stack([array(o, "output", want.shape, where) for o in outs])
        kept = outs != 0  # elu and gelu are zero only at 0
        close(np.where(kept, outs, 0), np.where(kept, want / (1 - p), 0),
              "kept values (scaled by 1/(1 - p))",
              where, tolerance("float64"))
        # Hoeffding over the 4 x 240 values: a correct block misses by more with chance < 1e-9
        agree(1 - kept.mean(), p, hoeffding(kept.size), "share of values dropped", where)


@check("Base's taps (12 layers, S_m = 3, P = 16: z3, z6, z9), and a blue block under bf16 autocast (--amp)",
       hidden=True)
def skip_base(g):
    judge_taps(g, 12, 3, 16, 32)
    state, x, where = blue_case(True, "relu", torch.float32, seed=72)
    got = g.run(blue_block, where=where + " under bf16 autocast", batch_norm=True, activation="relu",
                state=state, x=x, amp=True)["results"][0]
    close(got, g.expect(blue_reference, state, x, True, "relu"), "output",
          where + " under bf16 autocast, eval",
          tolerance("bfloat16"))
