"""Tests for unet.py: initialisers, blocks, attention gate, U-Net family (Table 5.4, Fig. A.1)."""
import math

import pytest
import torch
import torch.nn.functional as F

import unet
from unet import AttentionGate, AttentionUNet, AttentionYNet, ConvBlock, UNet


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("cls, thesis, spec", [(UNet, 1.95e6, 1_940_817), (AttentionUNet, 1.99e6, 1_985_061)])
def test_parameter_counts_match_thesis(cls, thesis, spec):
    with torch.device("meta"):
        model = cls()
    assert abs(n_params(model) - thesis) / thesis < 0.01
    assert n_params(model) == spec  # the gate's width is f_i (f_i / 2 would give 1.96M, outside 1% of 1.99M)


GATED = pytest.mark.ex6  # the attention gates are course exercise 6


@pytest.mark.parametrize("model", [pytest.param(UNet(filters=4), id="unet"),
                                   pytest.param(AttentionUNet(filters=4), id="att_unet", marks=GATED),
                                   pytest.param(AttentionUNet(filters=4, batch_norm=True), id="att_unet_bn",
                                                marks=GATED),
                                   pytest.param(AttentionYNet(filters=4), id="att_ynet", marks=GATED)])
def test_shapes_gradients_and_size_check(model):
    x = torch.rand(2, 1, 32, 48)
    out = model(x)
    seg, recon = out if isinstance(model, AttentionYNet) else (out, None)
    assert seg.shape == (2, 1, 32, 48)
    loss = seg.square().mean()
    if recon is not None:
        assert recon.shape == x.shape
        assert recon.min() >= 0 and recon.max() <= 1
        loss = loss + F.mse_loss(recon, x)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 1, 40, 32))


@pytest.mark.ex6
def test_attention_ynet_reconstruction_ignores_skips_and_encoder_list():
    torch.manual_seed(0)
    model = AttentionYNet(filters=4, dropout=0.0).eval()
    x = torch.rand(1, 1, 32, 32)
    bottom, skips = model.encode(x)
    noisy = [s + torch.randn_like(s) for s in skips]
    # Fig. A.1: the reconstruction decoder has no skip connections; the segmentation decoder has.
    assert torch.equal(model.reconstruct(bottom), model(x)[1])
    assert not torch.allclose(model.decode(bottom, noisy), model.decode(bottom, skips))
    frozen = {id(p) for m in model.encoder_modules() for p in m.parameters()}
    assert frozen == {id(p) for p in model.encoder.parameters()}
    assert not frozen & {id(p) for p in model.bottleneck.parameters()}


def test_he_normal_matches_keras_truncated_normal():
    torch.manual_seed(0)
    w = unet.he_normal_(torch.empty(256, 64, 3, 3))
    target = math.sqrt(2.0 / (64 * 9))  # Keras: the std after truncation is sqrt(2 / fan_in)
    bound = 2.0 * target / 0.87962566103423978
    assert abs(w.double().std().item() / target - 1) < 0.02
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.98 * bound  # the cut is at 2 std of the untruncated normal


def test_glorot_uniform_and_the_init_knob():
    torch.manual_seed(0)
    w = unet.glorot_uniform_(torch.empty(128, 64, 3, 3))
    limit = math.sqrt(6.0 / ((64 + 128) * 9))
    assert w.abs().max().item() <= limit and w.abs().max().item() > 0.99 * limit
    assert abs(w.double().std().item() / (limit / math.sqrt(3)) - 1) < 0.02
    he = ConvBlock(64, 64, init="he_normal").conv.weight.std().item()
    glorot = ConvBlock(64, 64, init="glorot_uniform").conv.weight.std().item()
    assert abs(he / math.sqrt(2 / 576) - 1) < 0.03 and abs(glorot / math.sqrt(2 / 1152) - 1) < 0.03


def test_batch_norm_uses_keras_constants():
    torch.manual_seed(0)
    block = ConvBlock(2, 3, batch_norm=True, activation="relu")
    x = torch.randn(4, 2, 8, 8)
    conv_out = block.conv(x)
    block(x)
    mean = conv_out.mean(dim=(0, 2, 3))
    # Keras: moving = 0.99 * moving + 0.01 * batch, starting from 0
    assert torch.allclose(block.norm.running_mean, 0.01 * mean, atol=1e-6)
    block.eval()
    ref = torch.relu((conv_out - block.norm.running_mean[:, None, None])
                     / torch.sqrt(block.norm.running_var[:, None, None] + 1e-3))
    assert torch.allclose(block(x), ref, atol=1e-5)


def gate_reference(gate, skip, up):
    """alpha by hand from the gate's own weights, float64, BN folded in eval form."""
    def conv(x, layer, norm):
        y = torch.einsum("oc,bchw->bohw", layer.weight[:, :, 0, 0], x) + layer.bias[None, :, None, None]
        if isinstance(norm, torch.nn.BatchNorm2d):
            y = (y - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var[:, None, None] + 1e-3)
            y = y * norm.weight[:, None, None] + norm.bias[:, None, None]
        return y
    hidden = torch.clamp(conv(skip, gate.skip_proj, gate.skip_norm) + conv(up, gate.up_proj, gate.up_norm),
                         min=0)
    return 1 / (1 + torch.exp(-conv(hidden, gate.psi, gate.psi_norm)))


@pytest.mark.ex6
@pytest.mark.parametrize("batch_norm", [False, True])
def test_attention_gate_modes_against_hand_computation(batch_norm):
    torch.manual_seed(0)
    gate_up = AttentionGate(5, batch_norm=batch_norm, mode="up").double()
    if batch_norm:
        for m in gate_up.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    gate_skip = AttentionGate(5, batch_norm=batch_norm, mode="skip").double()
    gate_skip.load_state_dict(gate_up.state_dict())
    gate_up.eval(), gate_skip.eval()
    skip, up = torch.randn(2, 5, 6, 7, dtype=torch.float64), torch.randn(2, 5, 6, 7, dtype=torch.float64)
    alpha = gate_reference(gate_up, skip, up)
    assert alpha.shape == (2, 1, 6, 7)
    assert torch.allclose(gate_up(skip, up), up * alpha)
    assert torch.allclose(gate_skip(skip, up), skip * alpha)
    assert not torch.allclose(gate_up(skip, up), gate_skip(skip, up))


@pytest.mark.ex6
def test_gate_mode_reaches_the_model():
    torch.manual_seed(0)
    a = AttentionUNet(filters=4, dropout=0.0, gate_mode="up").eval()
    b = AttentionUNet(filters=4, dropout=0.0, gate_mode="skip").eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 1, 32, 32)
    assert not torch.allclose(a(x), b(x))


def test_dropout_rate_per_level_in_encoder_and_decoder():
    rates = (0.1, 0.15, 0.2, 0.25, 0.3)
    model = UNet(filters=4, dropout=rates)
    for i in range(4):
        assert model.encoder[i].first.drop.p == rates[i] and model.decoder[i].first.drop.p == rates[i]
        assert isinstance(model.encoder[i].second.drop, torch.nn.Identity)  # only after the first conv
    assert model.bottleneck.first.drop.p == rates[4]
    with pytest.raises(ValueError):
        UNet(dropout=(0.1, 0.2))


def test_tiny_unet_overfits_one_image():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = (((yy - 12) ** 2 + (xx - 18) ** 2) < 49).float()[None, None]  # (1, 1, 32, 32) a disc
    image = 0.5 + 0.3 * mask * torch.sin(xx)[None, None] + 0.1 * torch.randn(1, 1, 32, 32)
    model = UNet(filters=4, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = F.binary_cross_entropy_with_logits(model(image), mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


@pytest.mark.parametrize("batch_norm", [False, True])
def test_conv_block_relu_in_place_keeps_outputs_and_gradients(batch_norm):
    torch.manual_seed(0)
    block = ConvBlock(2, 3, batch_norm=batch_norm, activation="relu")
    assert block.act.inplace  # one full-resolution tensor fewer per block
    reference = ConvBlock(2, 3, batch_norm=batch_norm, activation="relu")
    reference.load_state_dict(block.state_dict())
    reference.act = torch.nn.ReLU()  # out of place
    x = torch.randn(4, 2, 8, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = block(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (out_ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)
    for p, p_ref in zip(block.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=0)


class _KeepGradient(torch.autograd.Function):
    """The identity, keeping the gradient its output is handed: what the op before a concatenation sees."""

    @staticmethod
    def forward(ctx, x, kept):
        ctx.kept = kept
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.kept.append(grad)
        return grad, None


@pytest.mark.parametrize("channels_last", [False, True])
def test_cat_channels_is_torch_cat_with_dense_gradients_in_channels_last(channels_last):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    a = torch.randn(2, 3, 5, 6).contiguous(memory_format=layout).requires_grad_()
    b = torch.randn(2, 4, 5, 6).contiguous(memory_format=layout).requires_grad_()
    kept = []
    out = unet.cat_channels([_KeepGradient.apply(a, kept), _KeepGradient.apply(b, kept)])
    torch.testing.assert_close(out, torch.cat([a, b], dim=1), rtol=0, atol=0)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    torch.testing.assert_close(a.grad, weights[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(b.grad, weights[:, 3:], rtol=0, atol=0)
    # torch.cat alone hands each input a strided channel slice; in channels-last memory the input's
    # producer gets a dense copy instead (its elementwise backward then runs vectorised), in NCHW the slice
    dense = [g.is_contiguous(memory_format=torch.channels_last) for g in kept]
    assert dense == [channels_last, channels_last]


@pytest.mark.parametrize("arch", ["unet", "unetr2d", "ynetr2d"])
def test_cat_channels_leaves_every_gradient_of_a_channels_last_network_unchanged(arch, monkeypatch):
    import unetr2d
    import ynetr2d
    build = {"unet": lambda: UNet(filters=4, batch_norm=True, activation="relu"),
             "unetr2d": lambda: unetr2d.UNETR2D("mini", filters=4, img_size=32),
             "ynetr2d": lambda: ynetr2d.YNETR2D("mini", filters=4, img_size=32)}[arch]
    module = {"unet": unet, "unetr2d": unetr2d, "ynetr2d": ynetr2d}[arch]
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    target = (torch.rand(2, 1, 32, 32) > 0.8).float()

    def gradients():
        torch.manual_seed(0)
        model = build().to(memory_format=torch.channels_last)
        F.binary_cross_entropy_with_logits(model(x), target).backward()
        return [p.grad for p in model.parameters()]

    ours = gradients()
    monkeypatch.setattr(module, "cat_channels", lambda tensors: torch.cat(tensors, dim=1))
    plain = gradients()
    assert len(ours) == len(plain)
    for g, g_plain in zip(ours, plain):
        torch.testing.assert_close(g, g_plain, rtol=0, atol=0)
