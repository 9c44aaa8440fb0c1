"""Exercise 12: every training objective of the thesis as one pure function of the output and the batch.

Thesis: §4.3.2 (BCE), App. B Table 2 (BCE + Dice), §5.3 (the pretext's MSE), App. A Eq. 1 (the
Attention Y-Net's alpha * MSE + (1 - alpha) * BCE, with unlabelled target images).
The checks sweep every branch of train.compute_loss: both losses, pretext on and off, one output or
the Y-Net's pair, alpha from 0 to 1, unlabelled samples anywhere in the batch (and all of them),
batches of 1 to 3 and odd sizes; logits in float64, in float32 up to +-30 as a confident network
gives them (where BCE computed on probabilities, clipped or not, is far off and has no gradient), and
bf16 under autocast, as --amp runs it. Values and the gradients of both outputs are compared with
the losses in float64.
Shapes: B batch, (B, 1, H, W) logits, reconstructions, images and masks (-1: no label).
"""
import torch
import torch.nn.functional as F

from judging import (Exercise, array, autocast, check, close, describe, probe, randn, reference, seeded,
                     tolerance)

EXERCISE = Exercise(
    12, title="Training losses and the Attention Y-Net loss",
    thesis="App. A Eq. 1, §4.3.2, §5.3, App. B Table 2",
    targets=(("train.py", "compute_loss"),),
    objective="Write every training objective of the thesis as one pure function of the output and the "
              "batch, including the Attention Y-Net's weighted sum with unlabelled images.",
    minutes=25,
    task="One function gives every training objective. A segmentation network: BCE on the logits (§4.3.2), "
         "plus the Dice loss when loss is 'bce_dice' (App. B); it must stay exact and keep its gradient for "
         "logits of +-30 in float32 and under bf16 autocast (--amp). A pretext run (pretext true): MSE "
         "between sigmoid(logits) and the clean image (§5.3). The Attention Y-Net returns (segmentation "
         "logits, reconstruction in [0, 1]): L = alpha * MSE(reconstruction, x) + (1 - alpha) * "
         "BCE(segmentation, y), alpha the keyword argument (App. A Eq. 1), where a sample whose mask is -1 "
         "(an unlabelled target image) has a BCE of 0, wherever it sits in the batch, and the BCE is "
         "averaged over the batch; in a pretext run only the reconstruction's MSE against y.",
    hints=("Sort the cases first: is the output one tensor or a pair, and is it a pretext run? Which term of "
           "Eq. 1 has the factor alpha?",
           "F.binary_cross_entropy_with_logits(..., reduction='none') gives per-pixel terms to average per "
           "sample (it never forms sigmoid(z), which is 1.0 in float32 at z = 30); multiply by 1 for a "
           "labelled sample and 0 for an unlabelled one (and clamp its -1 mask at 0 first) before the mean "
           "over the batch; dice_loss is defined just above."),
    questions=("App. A trains stage 1 with alpha = 0.98. If the reconstruction MSE is about 0.01 and the BCE "
               "about 0.3 early on, which term dominates the loss, and what failure of the two-step Y-Net "
               "training did this extra stage cure according to App. A?",),
)


@probe
def loss_of(output, x, y, kwargs, bf16=False):
    """train.compute_loss(output, x, y, **kwargs) (bf16: the output in bf16 under autocast, as --amp runs
    it) and its gradients with respect to the output's parts."""
    import train
    parts = list(output) if isinstance(output, tuple) else [output]
    parts = [p.to(torch.bfloat16) if bf16 else p for p in parts]
    for p in parts:
        p.requires_grad_(True)
    output = tuple(parts) if isinstance(output, tuple) else parts[0]
    with autocast(bf16):
        loss = train.compute_loss(output, x, y, **kwargs)
    answer = {"loss": loss}
    if torch.is_tensor(loss) and loss.requires_grad:
        grads = torch.autograd.grad(loss, parts, allow_unused=True)
        answer["grads"] = dict(zip(("seg", "rec"), grads))
    return answer


@reference
def loss_reference(output, x, y, loss="bce", pretext=False, alpha=0.5):
    """The objective in float64 -> (value, {"seg": gradient, "rec": gradient})."""
    parts = list(output) if isinstance(output, tuple) else [output]
    parts = [t.double().clone().requires_grad_(True) for t in parts]
    x, y = x.double(), y.double()
    if len(parts) == 2:
        seg, rec = parts
        if pretext:
            value = ((rec - y) ** 2).mean()
        else:
            labelled = (y.flatten(1)[:, 0] >= 0).double()  # (B,)
            bce = F.binary_cross_entropy_with_logits(seg, y.clamp(min=0), reduction="none")
            bce = bce.flatten(1).mean(1)  # (B,)
            value = alpha * ((rec - x) ** 2).mean() + (1 - alpha) * (bce * labelled).mean()
    elif pretext:
        value = ((torch.sigmoid(parts[0]) - y) ** 2).mean()
    else:
        z = parts[0]
        value = F.binary_cross_entropy_with_logits(z, y)
        if loss == "bce_dice":
            p = torch.sigmoid(z)
            value = value + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    grads = torch.autograd.grad(value, parts, allow_unused=True)
    named = zip(("seg", "rec"), grads, parts)
    return value, {name: torch.zeros_like(p) if g is None else g for name, g, p in named}


def batch(B=2, shape=(4, 5), std=3.0, seed=120, dtype=torch.float64, confident=False):
    """(logits, reconstruction in (0, 1), x, binary y, clean image); confident: logits of +-30, half of
    them on the wrong side of the mask."""
    gen = seeded(seed)
    y = (torch.rand(B, 1, *shape, generator=gen) < 0.4).double()
    z = randn(gen, B, 1, *shape, std=std)
    if confident:
        wrong = torch.rand(B, 1, *shape, generator=gen) < 0.5
        z = 30.0 * torch.where(wrong, 1 - 2 * y, 2 * y - 1)
    rec, x, clean = (torch.rand(B, 1, *shape, generator=gen, dtype=torch.float64) for _ in range(3))
    return [t.to(dtype) for t in (z, rec, x, y, clean)]


def judge(g, output, x, y, where, dtype="float64", scale=1.0, bf16=False, **kwargs):
    """Value and gradients of compute_loss against the reference."""
    kwargs = {"loss": "bce", "pretext": False, "alpha": 0.5, **kwargs}
    where = f"{where}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
    got = g.run(loss_of, where=where, output=output, x=x, y=y, kwargs=kwargs, bf16=bf16)
    value, grads = g.expect(loss_reference, output, x, y, kwargs["loss"], kwargs["pretext"], kwargs["alpha"])
    tol = tolerance("bfloat16" if bf16 else dtype, scale)
    close(array(got["loss"], "loss", (), where), value, "loss", where, tol)
    mine = got.get("grads")
    assert mine is not None, \
        f"on {where}: the loss is {describe(got['loss'])}, not a tensor that backpropagates"
    for name, want in grads.items():
        g_ = mine.get(name)
        if g_ is None and float(want.abs().max()) == 0:
            continue  # no gradient, rightly
        assert g_ is not None, f"gradient of the {name} on {where}: none reached it"
        # the loss is a mean: its gradient entries are terms over n, judged relative to the largest
        close(g_, want, f"gradient of the {'segmentation' if name == 'seg' else 'reconstruction'}", where,
              tolerance("bfloat16" if bf16 else dtype), floor=0.0)


@check("segmentation: BCE on the logits, value and gradient: float64, float32 logits of +-30 as a confident "
       "network gives them, and bf16 under autocast (--amp)", points=3)
def loss_bce(g):
    z, _, x, y, _ = batch()
    judge(g, z, x, y, "B=2, 4x5 logits, float64")
    z, _, x, y, _ = batch(B=3, shape=(3, 7), seed=121, dtype=torch.float32, confident=True)
    judge(g, z, x, y, "B=3, 3x7 float32 logits of +-30", "float32", 30.0)
    z, _, x, y, _ = batch(B=1, shape=(6, 6), seed=122, dtype=torch.float32, confident=True)
    judge(g, z, x, y, "B=1, 6x6 logits of +-30 in bf16 under autocast", bf16=True, scale=30.0)


@check("bce_dice adds the Dice loss 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) (App. B)")
def loss_bce_dice(g):
    for B, shape, seed, dtype in [(2, (4, 5), 123, torch.float64), (3, (2, 9), 124, torch.float32)]:
        z, _, x, y, _ = batch(B, shape, seed=seed, dtype=dtype)
        judge(g, z, x, y, f"B={B}, {shape[0]}x{shape[1]}, {str(dtype)[6:]}", str(dtype)[6:], loss="bce_dice")


@check("pretext: MSE between sigmoid(logits) and the clean image (§5.3), value and gradient")
def loss_pretext(g):
    for B, seed, dtype in [(2, 125, torch.float64), (1, 126, torch.float32)]:
        z, _, x, _, clean = batch(B, seed=seed, dtype=dtype)
        judge(g, z, x, clean, f"B={B}, 4x5, {str(dtype)[6:]}", str(dtype)[6:], pretext=True)


@check("Attention Y-Net: alpha MSE(reconstruction, x) + (1 - alpha) BCE(segmentation, y) for alpha 0, 0.3, "
       "0.98 and 1; value and both gradients", points=2)
def loss_ynet(g):
    z, rec, x, y, _ = batch(seed=127)
    for alpha in (0.0, 0.3, 0.98, 1.0):
        judge(g, (z, rec), x, y, "the Y-Net's pair, B=2, 4x5, float64", alpha=alpha)


@check("Attention Y-Net: an unlabelled sample (mask -1) adds a BCE of 0 and no gradient, wherever it sits "
       "in the batch; the BCE is averaged over the whole batch", points=2)
def loss_unlabelled(g):
    for B, unlabelled, seed in [(2, (1,), 128), (3, (1,), 129), (2, (0,), 130), (2, (0, 1), 131)]:
        z, rec, x, y, _ = batch(B, seed=seed)
        y[list(unlabelled)] = -1.0
        judge(g, (z, rec), x, y, f"the Y-Net's pair, B={B}, sample(s) {list(unlabelled)} unlabelled",
              alpha=0.3)


@check("Attention Y-Net pretext: MSE between the reconstruction and the clean target")
def loss_ynet_pretext(g):
    z, rec, x, _, clean = batch(B=3, seed=132)
    judge(g, (z, rec), x, clean, "the Y-Net's pair, B=3, 4x5, float64", pretext=True)


@check("Attention Y-Net on float32 logits of +-30 with an unlabelled sample, and under bf16 autocast",
       hidden=True)
def loss_ynet_confident(g):
    z, rec, x, y, _ = batch(B=3, shape=(3, 5), seed=133, dtype=torch.float32, confident=True)
    y[2] = -1.0
    judge(g, (z, rec), x, y, "the Y-Net's pair, B=3, float32 logits of +-30, sample 2 unlabelled",
          "float32", 30.0)
    judge(g, (z, rec), x, y, "the same under bf16 autocast", bf16=True, scale=30.0, alpha=0.98)

