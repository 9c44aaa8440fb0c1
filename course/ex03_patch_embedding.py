"""Exercise 3: the patch embedding and position embedding of the ViT encoder.

Thesis: §2.2.5, §3.1, Fig. 2.5 (ViT [13]; no class token, as UNETR [33]).
The checks sweep what vit.PatchEmbedding allows: channels C = 1 to 3, patch sides P that divide the
image (2, 3, 4, 16, one patch or many), hidden sizes D, batches of 1 to 3, float32 and float64 (bf16
under --amp); they compare the tokens and the gradients of x, proj and pos_embed with the equivalent
strided convolution in float64, and feed inputs of every wrong shape (wrong width, wrong height, the
right pixel count in another shape, larger and smaller squares), each of which must raise ValueError.
Shapes: B batch, C channels, H x W image, P patch side, N = HW/P^2 tokens, D hidden size.
"""
import numpy as np
import torch
import torch.nn.functional as F

from judging import (Exercise, array, autocast, cast, check, close, gradients, load, probe, raised_by, randn,
                     reference, reference_gradients, seeded, tolerance, weights_of)

EXERCISE = Exercise(
    3, title="Patch embedding and position embedding", thesis="§2.2.5, §3.1, Fig. 2.5",
    targets=(("vit.py", "PatchEmbedding.forward"),),
    objective="Turn an image into a sequence of patch tokens with reshape and permute, and see that the "
              "linear patch projection is a strided convolution.",
    minutes=20,
    task="Cut the (B, C, H, W) image into non-overlapping P x P patches in row-major order (token n is "
         "patch row n // (W/P), column n % (W/P)), flatten each patch in (C, P_row, P_col) order, project it "
         "to D with self.proj and add the learned position embedding self.pos_embed, one vector per patch "
         "position (no class token, as in UNETR [33]). Any C, P and D must work. Refuse an input that is "
         "not img_size x img_size with a ValueError (its width, its height and its shape all count).",
    hints=("Split each of H and W into (number of patches, P) with one reshape; then bring the two "
           "patch-grid axes to the front and the three within-patch axes (C, P, P) to the back.",
           "Six axes do it: batch, channel, then (patch row, row in the patch) and (patch column, column "
           "in the patch). Order them patch row, patch column, then channel and the two in-patch axes, "
           "and flatten each group. The result equals a Conv2d with kernel = stride = P whose weight is "
           "proj.weight viewed as (D, C, P, P)."),
    questions=("§3.1 keeps ViT-Base's rule that D equals the length of a flattened patch (768 for 16 x 16 x "
               "3, Table 2.1) and so sets D = 256 for the grey EM images. How many tokens N does a 256 x 256 "
               "input give, and how many parameters does the patch projection of UNETR-2D Base have?",),
    withheld=(("tests/test_vit.py", "_conv_tokens"),),
)


def embedding_case(img, P, C, D, B, dtype=torch.float64, seed=30):
    """(state, x, where): the grader's weights (non-zero bias and pos_embed) and an image batch."""
    shapes = {"proj.weight": (D, C * P * P), "proj.bias": (D,), "pos_embed": (1, (img // P) ** 2, D)}
    state = weights_of(shapes, seed)
    x = randn(seeded(seed + 1), B, C, img, img, dtype=dtype)
    return state, x, f"img_size={img}, P={P}, C={C}, D={D}, B={B}, {str(dtype)[6:]}"


@probe
def patch_embedding(img, P, C, D, state, x, grad=False, amp=False):
    """vit.PatchEmbedding with the grader's weights; with grad, the gradients of weighted(tokens)."""
    import vit
    module = vit.PatchEmbedding(img_size=img, patch_size=P, in_channels=C, embed_dim=D)
    pe = load(module, state, torch.float32 if amp else x.dtype)
    x.requires_grad_(grad)
    with autocast(amp):
        result = pe(x)
    answer = {"result": result}
    if grad:
        answer["grads"] = gradients(result, {"x": x, **dict(pe.named_parameters())})
    return answer


@probe
def patch_embedding_raises(img, P, C, D, state, x):
    import vit
    pe = vit.PatchEmbedding(img_size=img, patch_size=P, in_channels=C, embed_dim=D)
    return raised_by(load(pe, state), x)


@reference
def conv_tokens(state, x, P):
    """Fig. 2.5 as a strided convolution in float64: Conv2d(C, D, P, stride P) with proj.weight viewed as
    (D, C, P, P), flattened row by row, plus pos_embed. -> (B, N, D)"""
    state, x = cast(state, torch.float64), x.double()
    D, C = state["proj.weight"].shape[0], x.shape[1]
    conv = F.conv2d(x, state["proj.weight"].view(D, C, P, P), state["proj.bias"],
                    stride=P)  # (B, D, H/P, W/P)
    return conv.flatten(2).transpose(1, 2) + state["pos_embed"]  # (B, N, D)


@reference
def conv_gradients(state, x, P):
    return reference_gradients(lambda weights, x: conv_tokens(weights, x, P), {"x": x}, state)


CASES = [(8, 4, 2, 5, 3, torch.float64), (12, 4, 1, 3, 1, torch.float32), (6, 2, 3, 4, 2, torch.float64),
         (16, 16, 1, 2, 2, torch.float32), (12, 3, 2, 4, 1, torch.float64)]


@check("tokens equal the strided convolution with proj's weight, plus pos_embed: any C, P, D and batch; "
       "float64 and float32", points=3)
def patch_tokens(g):
    for img, P, C, D, B, dtype in CASES:
        state, x, where = embedding_case(img, P, C, D, B, dtype)
        got = g.run(patch_embedding, where=where, img=img, P=P, C=C, D=D, state=state, x=x)["result"]
        close(got, g.expect(conv_tokens, state, x, P), "tokens", where, tolerance(dtype))


@check("tokens are in row-major patch order: token n is patch row n // (W/P), column n % (W/P)")
def patch_row_major(g):
    state, _, where = embedding_case(12, 4, 1, 5, 3, seed=32)
    state["pos_embed"], state["proj.bias"] = torch.zeros(1, 9, 5, dtype=torch.float64), torch.zeros(5)
    cells = [(0, 2), (1, 0), (2, 1)]
    x = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    for i, (row, col) in enumerate(cells):
        x[i, 0, 4 * row + 1, 4 * col + 2] = 1.0  # one pixel inside patch (row, col)
    tokens = array(g.run(patch_embedding, where=where, img=12, P=4, C=1, D=5, state=state, x=x)["result"],
                   "tokens",
                   (3, 9, 5), where)
    for i, (row, col) in enumerate(cells):
        lit = np.nonzero(np.abs(tokens[i]).sum(-1) > 1e-12)[0].tolist()
        assert lit == [3 * row + col], \
            f"on {where}: a pixel of patch (row {row}, column {col}) reached token(s) {lit}, expected " \
            f"token {3 * row + col}"


@check("gradients of x, proj and pos_embed equal the convolution's (float64 and float32)", points=2)
def patch_gradients(g):
    for img, P, C, D, B, dtype in (CASES[0], CASES[1]):
        state, x, where = embedding_case(img, P, C, D, B, dtype, seed=35)
        got = g.run(patch_embedding, where=where, img=img, P=P, C=C, D=D, state=state, x=x,
                    grad=True).get("grads")
        assert got is not None, f"on {where}: the tokens are not a tensor that backpropagates"
        for name, want in g.expect(conv_gradients, state, x, P).items():
            close(got.get(name), want, f"gradient of {name}", where, tolerance(dtype))


@check("an input that is not img_size x img_size raises ValueError: wrong width, wrong height, the same "
       "pixel count in another shape, a larger or a smaller square", points=2)
def patch_refuses_shapes(g):
    state, _, where = embedding_case(8, 4, 2, 5, 1, seed=34)
    for H, W in [(8, 16), (16, 8), (4, 16), (16, 16), (4, 4), (8, 12)]:
        x = torch.zeros(1, 2, H, W, dtype=torch.float64)
        got = g.run(patch_embedding_raises, where=f"{where}, a {H}x{W} input", img=8, P=4, C=2, D=5,
                    state=state, x=x)["raised"]
        assert got == "ValueError", \
            f"on {where}, a {H}x{W} input: raised {got}, expected ValueError (the encoder takes 8x8)"


@check("a 64 x 64 input in 16 x 16 patches (one channel, as UNETR-2D), and under bf16 autocast (--amp)",
       hidden=True)
def patch_unetr_size(g):
    for amp in (False, True):
        state, x, where = embedding_case(64, 16, 1, 8, 2, torch.float32, seed=37)
        where += " under bf16 autocast" if amp else ""
        got = g.run(patch_embedding, where=where, img=64, P=16, C=1, D=8, state=state, x=x,
                    amp=amp)["result"]
        close(got, g.expect(conv_tokens, state, x, 16), "tokens", where,
              tolerance("bfloat16" if amp else "float32"))
