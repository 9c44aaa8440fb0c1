"""Exercise 6: the attention gate, both published forms.

Thesis: §2.1, Fig. 2.2, Table 5.1; the gate of the code of ref. [34] (alpha rescales the upsampled
decoder signal, mode 'up') and of Oktay et al. [41] (alpha rescales the skip, mode 'skip').
The checks sweep what unet.AttentionGate allows: widths f from 1 to 5, BatchNorm on and off, both
modes, eval mode and training (where BatchNorm uses the batch's statistics), batches of 1 to 3 and
non-square maps, float32 and float64 (bf16 under --amp); coefficients, outputs and the gradients of
skip, up and every weight are compared with the gate in float64.
Shapes: B batch, f channels, H x W map.
"""
import torch
import torch.nn.functional as F

from judging import (Exercise, autocast, batch_norm_stats, cast, check, close, gradients, load, probe, randn,
                     reference, reference_gradients, seeded, tolerance, weights_of)

EXERCISE = Exercise(
    6, title="Attention gate", thesis="§2.1, Fig. 2.2, Table 5.1 (refs. [34], [41])",
    targets=(("unet.py", "AttentionGate.coefficients"), ("unet.py", "AttentionGate.forward")),
    objective="Compute per-pixel attention coefficients from two feature maps and apply them in both "
              "published forms of the gate.",
    minutes=15,
    task="coefficients: alpha = sigmoid(psi(ReLU(W_skip * skip + W_up * up))) with the 1x1 convolutions "
         "skip_proj, up_proj and psi, each followed by its norm (an identity without BatchNorm; with it, the "
         "batch's statistics in training and the running ones in eval): one coefficient in (0, 1) per "
         "pixel, (B, 1, H, W), for any width f. forward: alpha rescales the upsampled decoder signal in mode "
         "'up' (the code of [34], behind the thesis's numbers) or the encoder skip in mode 'skip' (Oktay et "
         "al. [41]).",
    hints=("Follow the lower right of Fig. 2.2 from the two inputs to the single-channel map; where does "
           "each norm sit?",
           "Each norm comes right after its convolution, before the sum; calling the norm modules keeps "
           "their training and eval behaviour; alpha (B, 1, H, W) broadcasts over the channels when it "
           "multiplies a (B, f, H, W) map."),
    questions=("Table 5.1: attention gates lifted the U-Net from 0.881 to 0.884 but took UNETR-2D from 0.829 "
               "to 0.788. How many parameters does one gate of width f add without BatchNorm, and do the "
               "gates at f = 16, 32, 64, 128 explain the step from 1.95M to 1.99M in Table 5.4?",),
    withheld=(("tests/test_unet.py", "gate_reference"),),
)


def gate_case(f, batch_norm, shape, dtype=torch.float64, seed=70):
    """(state, skip, up, where) for a gate of width f on maps of `shape` = (B, H, W)."""
    state = weights_of({"skip_proj.weight": (f, f, 1, 1), "skip_proj.bias": (f,),
                        "up_proj.weight": (f, f, 1, 1), "up_proj.bias": (f,),
                        "psi.weight": (1, f, 1, 1), "psi.bias": (1,)}, seed)
    if batch_norm:
        for i, (norm, n) in enumerate((("skip_norm", f), ("up_norm", f), ("psi_norm", 1))):
            batch_norm_stats(state, norm, n, seed + 1 + i)
    B, H, W = shape
    gen = seeded(seed + 5)
    skip, up = randn(gen, B, f, H, W, dtype=dtype), randn(gen, B, f, H, W, dtype=dtype)
    norm = "on" if batch_norm else "off"
    return state, skip, up, f"f={f}, BatchNorm {norm}, B={B}, {H}x{W}, {str(dtype)[6:]}"


@probe
def gate(f, batch_norm, mode, state, skip, up, method="coefficients", train=False, grad=False, amp=False):
    """unet.AttentionGate with the grader's weights: its coefficients or its output."""
    import unet
    module = load(unet.AttentionGate(f, batch_norm=batch_norm, mode=mode), state,
                  torch.float32 if amp else skip.dtype).train(train)
    for t in (skip, up):
        t.requires_grad_(grad)
    with autocast(amp):
        result = module.coefficients(skip, up) if method == "coefficients" else module(skip, up)
    answer = {"result": result}
    if grad:
        answer["grads"] = gradients(result, {"skip": skip, "up": up, **dict(module.named_parameters())})
    return answer


@reference
def gate_reference(state, skip, up, batch_norm, train=False, mode=None):
    """alpha of Fig. 2.2 in float64, sigmoid(norm(psi(ReLU(norm(W_s skip) + norm(W_u up))))); with a mode,
    the gate's output up * alpha or skip * alpha."""
    state, skip, up = cast(state, torch.float64), skip.double(), up.double()

    def conv_norm(name, norm, x):
        y = F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"])
        if not batch_norm:
            return y
        return F.batch_norm(y, state[f"{norm}.running_mean"].clone(), state[f"{norm}.running_var"].clone(),
                            state[f"{norm}.weight"], state[f"{norm}.bias"], training=train, eps=1e-3)
    s = conv_norm("skip_proj", "skip_norm", skip) + conv_norm("up_proj", "up_norm", up)
    alpha = torch.sigmoid(conv_norm("psi", "psi_norm", F.relu(s)))  # (B, 1, H, W)
    return alpha if mode is None else {"up": up, "skip": skip}[mode] * alpha


@reference
def gate_gradients(state, skip, up, batch_norm, mode):
    def output(weights, skip, up):
        return gate_reference(weights, skip, up, batch_norm, mode=mode)
    return reference_gradients(output, {"skip": skip, "up": up}, state)


CASES = [(3, False, (2, 4, 5), torch.float64), (3, True, (2, 4, 5), torch.float64),
         (1, True, (1, 3, 7), torch.float32), (5, False, (3, 6, 2), torch.float32)]


@check("coefficients: alpha = sigmoid(psi(ReLU(W_skip skip + W_up up))), one per pixel (B, 1, H, W), with "
       "and without BatchNorm (eval); any f, batch and map; float64 and float32", points=2)
def gate_alpha(g):
    for f, batch_norm, shape, dtype in CASES:
        state, skip, up, where = gate_case(f, batch_norm, shape, dtype)
        got = g.run(gate, where=where + ", eval", f=f, batch_norm=batch_norm, mode="up", state=state,
                    skip=skip, up=up)["result"]
        close(got, g.expect(gate_reference, state, skip, up, batch_norm), "alpha", where + ", eval",
              tolerance(dtype))


@check("forward: mode 'up' rescales the upsampled decoder signal (code of [34]), mode 'skip' the encoder "
       "skip (Oktay et al. [41])", points=2)
def gate_modes(g):
    for f, batch_norm, shape, dtype in CASES[1:3]:
        for mode in ("up", "skip"):
            state, skip, up, where = gate_case(f, batch_norm, shape, dtype, seed=74)
            got = g.run(gate, where=f"{where}, mode '{mode}', eval", f=f, batch_norm=batch_norm, mode=mode,
                        state=state, skip=skip, up=up,
                        method="forward")["result"]
            close(got, g.expect(gate_reference, state, skip, up, batch_norm, False, mode), "output",
                  f"{where}, mode '{mode}', eval", tolerance(dtype))


@check("in training the gate's BatchNorms normalise with the batch's statistics")
def gate_training(g):
    for f, shape in [(3, (2, 4, 5)), (2, (3, 3, 3))]:
        state, skip, up, where = gate_case(f, True, shape, seed=76)
        got = g.run(gate, where=where + ", training", f=f, batch_norm=True, mode="up", state=state,
                    skip=skip, up=up, train=True)["result"]
        close(got, g.expect(gate_reference, state, skip, up, True, True), "alpha", where + ", training",
              tolerance("float64"))


@check("gradients of skip, up and every weight equal the gate's, in both modes")
def gate_gradients_check(g):
    for mode, (f, batch_norm, shape, dtype) in (("up", CASES[1]), ("skip", CASES[3])):
        state, skip, up, where = gate_case(f, batch_norm, shape, dtype, seed=78)
        got = g.run(gate, where=f"{where}, mode '{mode}', eval", f=f, batch_norm=batch_norm, mode=mode,
                    state=state, skip=skip, up=up,
                    method="forward", grad=True)
        for name, want in g.expect(gate_gradients, state, skip, up, batch_norm, mode).items():
            close((got.get("grads") or {}).get(name), want, f"gradient of {name}",
                  f"{where}, mode '{mode}', eval", tolerance(dtype, 4.0))


@check("five channels on 3 x 7 maps, one sample, mode 'skip' with BatchNorm, and under bf16 autocast (--amp)",
       hidden=True)
def gate_other_size(g):
    for amp in (False, True):
        state, skip, up, where = gate_case(5, True, (1, 3, 7), torch.float32, seed=80)
        got = g.run(gate, where=where, f=5, batch_norm=True, mode="skip", state=state, skip=skip, up=up,
                    method="forward",
                    amp=amp)["result"]
        close(got, g.expect(gate_reference, state, skip, up, True, False, "skip"), "output",
              where + (" under bf16 autocast" if amp else "") + ", eval",
              tolerance("bfloat16" if amp else "float32"))
