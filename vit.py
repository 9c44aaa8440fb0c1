"""Vision Transformer (ViT) encoder of UNETR-2D and YNETR-2D.

Thesis: §2.2.5, Fig. 2.5, Table 2.1 (ViT sizes of [13]), §3.1, Table 5.3 (our Mini/Small/Base); the
encoder layer of §2.2.1 with the attention block of attention.py. Papers: Dosovitskiy et al. [13], "An
image is worth 16x16 words", ICLR 2021; UNETR, Hatamizadeh et al. [33].

The image is cut into non-overlapping P x P patches (row-major order), each patch is flattened and
projected linearly to D, and a learned position embedding (one vector per patch position) is added.
As in UNETR [33] there is no class token. Then L encoder layers; the encoder returns the output of
every layer, since UNETR-2D taps layers S_m, 2 S_m, 3 S_m for its skip connections (Table 5.3).

Where we follow the thesis code rather than the text: its layers are pre-norm as in ViT [13]
(x + MHSA(LN(x)), then x + MLP(LN(x)); Fig. 2.3 of [7] normalises after the sum), the MLP applies GELU
[70] after *both* linear maps (Eq. 2.2 has one ReLU), LayerNorm eps is 1e-6, and every head has full
width D (attention.py). A patch is flattened in (C, P_row, P_col) order so that a Conv2d(C, D, P, P)
weight reshaped to (D, C*P*P) is the projection; the thesis code flattens in (P_row, P_col, C) order,
the same thing for its grey images (C = 1).

Shape legend: B batch, C channels, H x W image, P patch side, N = HW/P^2 tokens, D hidden size,
h heads, M MLP size, L layers.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

from attention import MultiHeadSelfAttention, glorot_uniform_


@dataclass(frozen=True)
class ViTConfig:
    n_layers: int  # L, Transformer encoder layers
    embed_dim: int  # D, hidden size
    mlp_dim: int  # M, MLP size
    n_heads: int  # h, attention heads
    skip_step: int  # S_m, UNETR-2D skip l taps the output of layer S_m * l


# Table 5.3: UNETR-2D Transformer variants (Table 2.1's ViT-Base scaled to D = 256 for one channel, §3.1)
CONFIGS = {
    "mini": ViTConfig(n_layers=4, embed_dim=64, mlp_dim=256, n_heads=4, skip_step=1),
    "small": ViTConfig(n_layers=8, embed_dim=128, mlp_dim=512, n_heads=8, skip_step=2),
    "base": ViTConfig(n_layers=12, embed_dim=256, mlp_dim=1024, n_heads=12, skip_step=3),
}


def tokens_to_image(z, grid):
    """Fold row-major tokens back onto the patch grid, as UNETR does with every tapped layer (§2.2.5).

    z: (B, N, D); grid: H/P, or (H/P, W/P). Returns (B, D, H/P, W/P); token n lands at
    (row, col) = divmod(n, W/P).
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    B, N, D = z.shape
    assert N == gh * gw, f"{N} tokens do not fill a {gh}x{gw} patch grid"
    return z.reshape(B, gh, gw, D).permute(0, 3, 1, 2)  # (B, D, H/P, W/P)


class PatchEmbedding(nn.Module):
    """Split into P x P patches, flatten, project to D, add the position embedding (Fig. 2.5)."""

    def __init__(self, img_size=256, patch_size=16, in_channels=1, embed_dim=64):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.grid = img_size // patch_size
        self.n_patches = self.grid * self.grid
        self.proj = nn.Linear(in_channels * patch_size * patch_size, embed_dim)
        # one learned vector per patch position; no class token (UNETR [33])
        self.pos_embed = nn.Parameter(torch.empty(1, self.n_patches, embed_dim))
        self.reset_parameters()

    def reset_parameters(self):
        # as the thesis code: Keras Dense (Glorot uniform, zero bias) and Keras Embedding (U(-0.05, 0.05))
        glorot_uniform_(self.proj.weight, self.proj.in_features, self.proj.out_features)
        nn.init.zeros_(self.proj.bias)
        nn.init.uniform_(self.pos_embed, -0.05, 0.05)

    def forward(self, x):
        B, C, H, W = x.shape
        P, g, s = self.patch_size, self.grid, self.img_size
        if (H, W) != (s, s):
            raise ValueError(f"the ViT encoder (UNETR-2D, YNETR-2D) expects {s}x{s} inputs (img_size={s}), "
                             f"got {H}x{W}; predict larger images with stitch.predict_tiled")
        if C != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {C}")
        patches = x.reshape(B, C, g, P, g, P)  # (B, C, H/P, P, W/P, P)
        patches = patches.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
        patches = patches.reshape(B, self.n_patches, C * P * P)  # (B, N, C*P*P), row-major patches
        tokens = self.proj(patches)  # (B, N, D)
        return tokens + self.pos_embed  # (B, N, D)


class TransformerBlock(nn.Module):
    """One pre-norm encoder layer (§2.2.1, Fig. 2.5): x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, embed_dim, n_heads, mlp_dim, dropout=0.1, head_dim=None, fused_attention=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(embed_dim, n_heads, head_dim=head_dim, dropout=dropout,
                                           fused=fused_attention)
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc1 = nn.Linear(embed_dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, embed_dim)
        self.act = nn.GELU()  # exact (erf) GELU, as tf.nn.gelu's default
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        # Keras Dense init of the thesis code: Glorot uniform (fans: in and out features), zero bias
        for fc in (self.fc1, self.fc2):
            glorot_uniform_(fc.weight, fc.in_features, fc.out_features)
            nn.init.zeros_(fc.bias)
        for norm in (self.norm1, self.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
        self.attn.reset_parameters()

    def forward(self, x, return_weights=False):
        a = self.attn(self.norm1(x), return_weights=return_weights)  # (B, N, D) [, (B, h, N, N)]
        a, weights = a if return_weights else (a, None)  # (B, N, D), (B, h, N, N)
        x = x + a  # (B, N, D)
        # MLP of the thesis code: GELU after both linear maps (Eq. 2.2 has ReLU after the first only)
        m = self.drop(self.act(self.fc1(self.norm2(x))))  # (B, N, M)
        m = self.drop(self.act(self.fc2(m)))  # (B, N, D)
        x = x + m  # (B, N, D)
        if return_weights:
            return x, weights
        return x


class ViTEncoder(nn.Module):
    """Patch embedding + L Transformer layers; returns the hidden state of every layer (z_1 .. z_L)."""

    def __init__(self, img_size=256, patch_size=16, in_channels=1, embed_dim=64, n_layers=4, n_heads=4,
                 mlp_dim=256, dropout=0.1, head_dim=None, fused_attention=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.n_layers = n_layers
        self.patch_embed = PatchEmbedding(img_size, patch_size, in_channels, embed_dim)
        self.grid = self.patch_embed.grid
        self.n_patches = self.patch_embed.n_patches
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, n_heads, mlp_dim, dropout=dropout, head_dim=head_dim,
                             fused_attention=fused_attention)
            for _ in range(n_layers))

    @classmethod
    def from_config(cls, cfg: ViTConfig, img_size=256, patch_size=16, in_channels=1, **kw):
        """Build a Table 5.3 preset; `kw` passes dropout, head_dim and fused_attention through."""
        return cls(img_size=img_size, patch_size=patch_size, in_channels=in_channels,
                   embed_dim=cfg.embed_dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                   mlp_dim=cfg.mlp_dim, **kw)

    def forward(self, x):
        z = self.patch_embed(x)  # (B, N, D)
        hidden_states = []
        for block in self.blocks:
            z = block(z)  # (B, N, D)
            hidden_states.append(z)
        return hidden_states  # L x (B, N, D); element i is layer i+1

    @torch.no_grad()
    def attention_maps(self, x):
        """Every layer's attention weights, L x (B, h, N, N), for visualisation (cf. [51])."""
        z = self.patch_embed(x)  # (B, N, D)
        maps = []
        for block in self.blocks:
            z, weights = block(z, return_weights=True)  # (B, N, D), (B, h, N, N)
            maps.append(weights)
        return maps


if __name__ == "__main__":
    x = torch.rand(1, 1, 256, 256)
    for name, cfg in CONFIGS.items():
        enc = ViTEncoder.from_config(cfg).eval()
        n_params = sum(p.numel() for p in enc.parameters())
        with torch.no_grad():
            hs = enc(x)
        print(f"{name:5s} {cfg}: {len(hs)} x {tuple(hs[-1].shape)}, {n_params:,} parameters")
