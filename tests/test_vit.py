"""vit.py against an equivalent Conv2d, a float64 reference of one layer, and direct indexing."""
import math

import pytest
import torch
import torch.nn as nn

from vit import CONFIGS, PatchEmbedding, TransformerBlock, ViTConfig, ViTEncoder, tokens_to_image


def _randomise(module, std=0.3):
    """Non-trivial weights everywhere (init has zero biases and unit LayerNorm, which hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def _conv_tokens(pe, x):
    """The patch embedding as a strided convolution: Conv2d(C, D, P, stride P) whose weight is proj.weight
    viewed as (D, C, P, P), flattened row by row, plus the position embedding (Fig. 2.5)."""
    D, P = pe.embed_dim, pe.patch_size
    conv = nn.Conv2d(pe.in_channels, D, kernel_size=P, stride=P).to(x.dtype)
    with torch.no_grad():
        conv.weight.copy_(pe.proj.weight.view(D, -1, P, P))
        conv.bias.copy_(pe.proj.bias)
    return conv(x).flatten(2).transpose(1, 2) + pe.pos_embed  # (B, N, D), row-major patches


@pytest.mark.ex3
def test_patch_embedding_equals_strided_conv():
    torch.manual_seed(0)
    B, C, S, P, D = 2, 2, 64, 16, 8  # C = 2 checks the (C, P_row, P_col) flattening order
    pe = PatchEmbedding(img_size=S, patch_size=P, in_channels=C, embed_dim=D).double()
    _randomise(pe)
    x = torch.randn(B, C, S, S, dtype=torch.float64)
    out = pe(x)
    assert pe.n_patches == (S // P) ** 2 and pe.grid == S // P
    torch.testing.assert_close(out, _conv_tokens(pe, x), rtol=1e-10, atol=1e-12)


def test_position_embedding_init_range():
    torch.manual_seed(1)
    pe = PatchEmbedding(img_size=256, patch_size=16, embed_dim=64)
    assert pe.pos_embed.shape == (1, 256, 64)
    assert pe.pos_embed.abs().max() <= 0.05 and pe.pos_embed.abs().max() > 0.049
    bound = math.sqrt(6 / (256 + 64))  # Glorot uniform of the (C*P*P -> D) projection
    assert pe.proj.weight.abs().max() <= bound and pe.proj.weight.abs().max() > 0.99 * bound


@pytest.mark.ex3
@pytest.mark.parametrize("shape", [(1, 1, 48, 64), (1, 1, 300, 300)])
def test_wrong_input_size_names_the_allowed_size(shape):
    pe = PatchEmbedding(img_size=64, patch_size=16, embed_dim=8)
    with pytest.raises(ValueError, match=r"64x64 inputs \(img_size=64\)") as err:
        pe(torch.zeros(shape))
    assert f"{shape[2]}x{shape[3]}" in str(err.value)


@pytest.mark.ex4
@pytest.mark.parametrize("size", ["mini", "small", "base"])
def test_encoder_returns_every_layer(size):
    torch.manual_seed(2)
    cfg = CONFIGS[size]
    enc = ViTEncoder.from_config(cfg, img_size=32).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        hs = enc(x)
        assert len(hs) == cfg.n_layers
        assert all(z.shape == (2, 4, cfg.embed_dim) for z in hs)
        # element i is layer i+1 applied to element i-1 (the patch embedding for i = 0)
        z = enc.patch_embed(x)
        for block, h in zip(enc.blocks, hs):
            z = block(z)
            torch.testing.assert_close(h, z, rtol=0, atol=0)
        maps = enc.attention_maps(x)
    assert len(maps) == cfg.n_layers and maps[0].shape == (2, cfg.n_heads, 4, 4)
    _, w0 = enc.blocks[0].attn(enc.blocks[0].norm1(enc.patch_embed(x)), return_weights=True)
    torch.testing.assert_close(maps[0], w0)


def test_table_5_3_presets():
    assert [(c.n_layers, c.embed_dim, c.mlp_dim, c.n_heads, c.skip_step) for c in CONFIGS.values()] == [
        (4, 64, 256, 4, 1), (8, 128, 512, 8, 2), (12, 256, 1024, 12, 3)]
    with pytest.raises(Exception):
        CONFIGS["mini"].n_layers = 5  # frozen


@pytest.mark.parametrize("size", ["mini", "small"])
def test_parameter_count_formula(size):
    cfg = CONFIGS[size]
    S, P, C = 64, 16, 1
    L, D, M, h = cfg.n_layers, cfg.embed_dim, cfg.mlp_dim, cfg.n_heads
    N, d = (S // P) ** 2, D  # full-width heads (thesis code)
    layer = 2 * 2 * D + 3 * (D * h * d + h * d) + h * d * D + D + (D * M + M) + (M * D + D)
    expected = C * P * P * D + D + N * D + L * layer
    enc = ViTEncoder.from_config(cfg, img_size=S, patch_size=P, in_channels=C)
    assert sum(p.numel() for p in enc.parameters()) == expected


def _reference_block(x, blk):
    """One pre-norm layer in float64 from the parameters: LN, Eq. 2.1 per head, GELU(erf) MLP."""
    def layer_norm(t, ln):
        mu = t.mean(dim=-1, keepdim=True)
        var = ((t - mu) ** 2).mean(dim=-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-6) * ln.weight + ln.bias

    def gelu(t):
        return 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))

    a = blk.attn
    h, d = a.n_heads, a.head_dim
    y = layer_norm(x, blk.norm1)
    q, k, v = ((y @ lin.weight.T + lin.bias).unflatten(-1, (h, d)) for lin in (a.q_proj, a.k_proj, a.v_proj))
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)
    weights = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    heads = torch.einsum("bhnm,bmhd->bnhd", weights, v).flatten(-2)
    x = x + heads @ a.out_proj.weight.T + a.out_proj.bias
    y = layer_norm(x, blk.norm2)
    y = gelu(y @ blk.fc1.weight.T + blk.fc1.bias)
    y = gelu(y @ blk.fc2.weight.T + blk.fc2.bias)
    return x + y


@pytest.mark.ex4
@pytest.mark.parametrize("head_dim", [None, 4])
def test_transformer_block_matches_float64_reference(head_dim):
    torch.manual_seed(3)
    blk = TransformerBlock(embed_dim=16, n_heads=4, mlp_dim=32, dropout=0.1,
                           head_dim=head_dim).double().eval()
    _randomise(blk)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(blk(x), _reference_block(x, blk), rtol=1e-10, atol=1e-12)


@pytest.mark.ex4
def test_gradients_reach_every_parameter():
    torch.manual_seed(4)
    enc = ViTEncoder(img_size=32, patch_size=16, embed_dim=16, n_layers=2, n_heads=2, mlp_dim=32).train()
    _randomise(enc)
    enc(torch.rand(2, 1, 32, 32))[-1].square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.ex5
@pytest.mark.parametrize("grid", [4, (2, 3)])
def test_tokens_to_image_is_row_major(grid):
    torch.manual_seed(5)
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    z = torch.randn(2, gh * gw, 5)
    img = tokens_to_image(z, grid)
    assert img.shape == (2, 5, gh, gw)
    for n in range(gh * gw):
        r, c = divmod(n, gw)
        assert torch.equal(img[:, :, r, c], z[:, n, :])
    assert torch.equal(img.flatten(2).transpose(1, 2), z)  # round trip


@pytest.mark.ex3
@pytest.mark.ex5
def test_token_grid_matches_image_layout():
    # a patch's token folds back to where the patch came from: make each patch's mean its token
    P, S = 16, 64
    pe = PatchEmbedding(img_size=S, patch_size=P, in_channels=1, embed_dim=1).double()
    with torch.no_grad():
        pe.proj.weight.fill_(1 / P**2)
        pe.proj.bias.zero_()
        pe.pos_embed.zero_()
    x = torch.randn(1, 1, S, S, dtype=torch.float64)
    folded = tokens_to_image(pe(x), pe.grid)  # (1, 1, 4, 4)
    torch.testing.assert_close(folded, nn.functional.avg_pool2d(x, P))


def test_from_config_passes_keywords():
    cfg = ViTConfig(2, 8, 16, 2, 1)
    enc = ViTEncoder.from_config(cfg, img_size=32, dropout=0.0, head_dim=4)
    assert len(enc.blocks) == 2 and enc.blocks[0].attn.head_dim == 4 and enc.blocks[0].drop.p == 0.0
