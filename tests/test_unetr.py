"""Tests for unetr2d.py and ynetr2d.py: parameter counts (Tables 5.2, 5.4), shapes, gradients,
the skip taps of Table 5.3 and the concatenation orders of the thesis code."""
import pytest
import torch

import vit
from unetr2d import UNETR2D
from ynetr2d import YNETR2D

SIZES = ["mini", "small", "base"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cls, size, filters, thesis", [
    (UNETR2D, "mini", 32, 4.24e6), (UNETR2D, "small", 32, 9.34e6), (UNETR2D, "base", 32, 48.7e6),
    (UNETR2D, "base", 8, 44.7e6), (UNETR2D, "base", 16, 45.6e6), (UNETR2D, "base", 64, 60.2e6),
    (YNETR2D, "mini", 32, 10.3e6), (YNETR2D, "small", 32, 15.4e6), (YNETR2D, "base", 32, 54.7e6)])
def test_parameter_counts_match_thesis(cls, size, filters, thesis):
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = cls(size, filters=filters, img_size=256)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bn_stats = sum(b.numel() for name, b in model.named_buffers()
                   if name.endswith(("running_mean", "running_var")))
    assert abs(trainable - thesis) / thesis < 0.01
    assert abs(trainable + bn_stats - thesis) / thesis < 0.01  # as Keras counts


_cache = {}


def tiny(cls, size):
    """One small model per (class, size), built once: img 32 (a 2x2 patch grid), F = 4."""
    if (cls, size) not in _cache:
        torch.manual_seed(0)
        _cache[cls, size] = cls(size, filters=4, img_size=32)
    return _cache[cls, size]


@pytest.mark.ex5
@pytest.mark.parametrize("cls", [UNETR2D, YNETR2D])
@pytest.mark.parametrize("size", SIZES)
def test_shapes_gradients_and_size_check(cls, size):
    model = tiny(cls, size).train()
    model.zero_grad()
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="32x32"):
        model(torch.rand(1, 1, 64, 64))


def grid_image(tokens, grid):
    """Row-major tokens (B, N, D) -> (B, D, grid, grid), written independently of vit.tokens_to_image."""
    B, N, D = tokens.shape
    image = torch.empty(B, D, grid, grid)
    for n in range(N):
        image[:, :, n // grid, n % grid] = tokens[:, n, :]
    return image


def record(modules, pre=False):
    """Hook each module; returns a dict index -> its input (pre) or output tensor."""
    seen, handles = {}, []
    for i, m in enumerate(modules):
        if pre:
            handles.append(m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0])))
        else:
            handles.append(m.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, out)))
    return seen, handles


@pytest.mark.ex5
@pytest.mark.parametrize("cls", [UNETR2D, YNETR2D])
@pytest.mark.parametrize("size", SIZES)
def test_skip_taps_are_hidden_states_S_m_times_l(cls, size):
    """Table 5.3: level l reads the output of encoder layer S_m * l; the bottleneck reads layer L."""
    model = tiny(cls, size).eval()
    cfg, K = vit.CONFIGS[size], model.n_levels
    layer_out, h1 = record(model.encoder.blocks)  # the layers' own outputs, in layer order
    skip_in, h2 = record(model.skips, pre=True)
    skip_out, h3 = record(model.skips)
    up_in, h4 = record(model.ups, pre=True)
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    for h in h1 + h2 + h3 + h4:
        h.remove()
    assert list(model.skip_layers) == [cfg.skip_step * level for level in range(1, K)]
    for level in range(1, K):
        expected = grid_image(layer_out[cfg.skip_step * level - 1], model.grid)
        assert torch.equal(skip_in[level], expected), (f"level {level} should read layer "
                                                       f"{cfg.skip_step * level}")
    bottom = grid_image(layer_out[cfg.n_layers - 1], model.grid)
    assert torch.equal(up_in[K - 1][:, :cfg.embed_dim], bottom)


@pytest.mark.ex5
def test_concatenation_orders_follow_the_thesis_code():
    """UNETR-2D: [decoder, skip] at l >= 1 and [first skip, decoder] at l = 0;
    YNETR-2D: [ViT skip, decoder, CNN skip] everywhere and [ViT output, CNN bottleneck] at the bottom."""
    u = tiny(UNETR2D, "mini").eval()
    dec_in, h1 = record(u.decoder, pre=True)
    ups_out, h2 = record(u.ups)
    skip_out, h3 = record(u.skips)
    with torch.no_grad():
        u(torch.rand(1, 1, 32, 32))
    for h in h1 + h2 + h3:
        h.remove()
    for level in range(1, u.n_levels):
        assert torch.equal(dec_in[level], torch.cat([ups_out[level], skip_out[level]], dim=1))
    assert torch.equal(dec_in[0], torch.cat([skip_out[0], ups_out[0]], dim=1))

    y = tiny(YNETR2D, "mini").eval()
    drop_in, h1 = record(y.drops, pre=True)
    ups_out, h2 = record(y.ups)
    skip_out, h3 = record(y.skips)
    cnn_out, h4 = record(y.cnn_encoder)
    bottom_out, h5 = record([y.cnn_bottleneck])
    with torch.no_grad():
        y(torch.rand(1, 1, 32, 32))
    for h in h1 + h2 + h3 + h4 + h5:
        h.remove()
    for level in range(y.n_levels):
        assert torch.equal(drop_in[level], torch.cat([skip_out[level], ups_out[level], cnn_out[level]],
                                                     dim=1))
    D = y.config.embed_dim
    assert torch.equal(drop_in[y.n_levels][:, D:], bottom_out[0])


def test_dropout_rates_per_level():
    rates, spatial = (0.1, 0.15, 0.2, 0.25, 0.3), (0.05, 0.1, 0.2, 0.3, 0.4)
    u = UNETR2D("mini", filters=4, img_size=32, dropout=rates)
    for level in range(1, 4):
        assert all(block.conv.drop.p == rates[level] for block in u.skips[level])
        assert u.decoder[level].first.drop.p == rates[level]
    assert u.skips[0].first.drop.p == rates[0] and u.decoder[0].first.drop.p == rates[0]
    y = YNETR2D("mini", filters=4, img_size=32, dropout=rates, spatial_dropout=spatial)
    assert [d.p for d in y.drops] == list(spatial)
    assert all(isinstance(d, torch.nn.Dropout2d) for d in y.drops)
    assert ([b.first.drop.p for b in y.cnn_encoder] == list(rates[:4])
            and y.cnn_bottleneck.first.drop.p == rates[4])
