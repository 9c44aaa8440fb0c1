"""UNETR-2D: a ViT encoder with a U-Net-style convolutional decoder.

Thesis: §2.2.5 and Fig. 2.6 (UNETR), §3.1 (UNETR-2D), Table 5.1 (ablation), Table 5.2 (initial
filters: 44.7M / 45.6M / 48.7M / 60.2M), Table 5.3 (Mini / Small / Base and the skip step S_m),
Table 5.4 (4.24M / 9.34M / 48.7M). Paper: Hatamizadeh et al. 2021, ref. [33] (UNETR, 3D).

The ViT (vit.py) returns the output of each of its L layers. With patches of side P the decoder
has K = log2(P) levels: the last hidden state is the bottleneck, level l = K-1 ... 1 takes hidden
state number S_m * l (Table 5.3; z3, z6, z9 for Base) and brings it from H/P to H/2^l with
K - l "blue blocks" (transpose conv + conv block), and level 0 is a double block on the raw
input. Concatenation orders follow the thesis code, so its trained weights map onto ours one to one.
`ViTSide` holds this ViT side (encoder, taps, skip paths); YNETR-2D (ynetr2d.py) builds on it too.
Where we differ from the thesis code: the model returns logits (the sigmoid lives in the loss).

Shape legend: B batch, C channels, H x W image, P patch side, N = HW/P^2 tokens, D hidden size,
L layers, F initial filters; decoder level l has F * 2^l channels at H / 2^l x W / 2^l.
"""
import math

import torch
import torch.nn as nn

import vit
from unet import ConvBlock, DoubleBlock, cat_channels, conv1x1, level_rates, up_conv


class BlueBlock(nn.Module):
    """A "blue block" of Fig. 2.6: transpose conv (x2 in H and W) then a conv block."""

    def __init__(self, in_ch, out_ch, batch_norm=True, activation="relu", dropout=0.0, init="he_normal"):
        super().__init__()
        self.up = up_conv(in_ch, out_ch)
        self.conv = ConvBlock(out_ch, out_ch, batch_norm, activation, dropout, init)

    def forward(self, x):
        x = self.up(x)  # (B, C_out, 2H, 2W)
        return self.conv(x)  # (B, C_out, 2H, 2W)


def skip_path(embed_dim, out_ch, n_blocks, **block_kw):
    """`n_blocks` blue blocks that take a reshaped hidden state (D, H/P, W/P) to (out_ch, H/P * 2^n, ...)."""
    return nn.Sequential(*(BlueBlock(embed_dim if j == 0 else out_ch, out_ch, **block_kw)
                           for j in range(n_blocks)))


def skip_taps(n_layers, skip_step, n_levels):
    """Table 5.3: level l (1 <= l < K) uses hidden state number S_m * l (1-based); the last one feeds the
    bottleneck."""
    taps = [skip_step * level for level in range(1, n_levels)]
    if taps and taps[-1] >= n_layers:
        raise ValueError(f"skip step {skip_step} x level {n_levels - 1} needs more than {n_layers} layers")
    return taps


def decoder_path(bottom_channels, widths, rates, n_inputs, **block_kw):
    """The decoder shared by UNETR-2D and YNETR-2D -> (ups, decoder), both indexed by level l < K.

    ups[l] is the transpose conv from level l+1 (from the bottleneck's `bottom_channels` for
    l = K-1) to level l's width F * 2^l; decoder[l] is the double block on the concatenation of
    `n_inputs` signals of that width (2 in UNETR-2D, 3 in YNETR-2D).
    """
    K = len(widths) - 1
    ups = nn.ModuleList(up_conv(bottom_channels if level == K - 1 else widths[level + 1], widths[level])
                        for level in range(K))
    decoder = nn.ModuleList(DoubleBlock(n_inputs * widths[level], widths[level], dropout=rates[level],
                                        **block_kw)
                            for level in range(K))
    return ups, decoder


class ViTSide(nn.Module):
    """The ViT side of UNETR-2D, which YNETR-2D reuses as is ("the same reshape and convolutional
    blocks used for skip connection signals in UNETR-2D", §3.2): the ViT encoder, the taps of
    Table 5.3 and one skip path per level. Subclasses add their decoder. Sets n_levels K, grid,
    skip_layers, encoder, skips, and the per-level dropout rates (0..K) and widths F * 2^l (0..K).
    The input size is checked by the ViT's patch embedding (a ValueError naming img_size).
    `fused_attention` runs Eq. 2.1 as torch's fused kernel (attention.py), the same outputs to rounding.
    """

    def __init__(self, size, filters, img_size, patch_size, in_channels, dropout, vit_dropout, head_dim,
                 fused_attention=False, **block_kw):
        super().__init__()
        self.config = vit.CONFIGS[size]
        self.img_size, self.patch_size = img_size, patch_size
        self.n_levels = K = int(round(math.log2(patch_size)))  # K = log2(P) = 4 for P = 16
        if 2**K != patch_size or img_size % patch_size:
            raise ValueError(f"patch_size must be a power of 2 dividing img_size, got {patch_size} and "
                             f"{img_size}")
        self.grid = img_size // patch_size
        self.skip_layers = skip_taps(self.config.n_layers, self.config.skip_step, K)
        self.encoder = vit.ViTEncoder.from_config(self.config, img_size=img_size, patch_size=patch_size,
                                                  in_channels=in_channels, dropout=vit_dropout,
                                                  head_dim=head_dim, fused_attention=fused_attention)
        self.rates = level_rates(dropout, K + 1)
        self.widths = [filters * 2**level for level in range(K + 1)]  # F, 2F, 4F, 8F, 16F
        # skips[l]: level l's skip; level 0 comes from the raw input, the others from the ViT.
        self.skips = nn.ModuleList(
            [DoubleBlock(in_channels, filters, dropout=self.rates[0], **block_kw)]
            + [skip_path(self.config.embed_dim, self.widths[level], K - level, dropout=self.rates[level],
                         **block_kw)
               for level in range(1, K)])

    def vit_bottom(self, hidden):
        """The last hidden state folded onto the patch grid: the bottleneck signal."""
        return vit.tokens_to_image(hidden[-1], self.grid)  # (B, D, H/P, W/P)

    def vit_skip(self, level, hidden, x):
        """Level l's ViT-side skip: a double block on the input x (l = 0), or hidden state S_m * l
        folded onto the patch grid and brought to H/2^l by K - l blue blocks."""
        if level == 0:
            return self.skips[0](x)  # (B, F, H, W)
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1] - 1], self.grid)  # (B, D, H/P, W/P)
        return self.skips[level](z)  # (B, F*2^l, H/2^l, W/2^l)


class UNETR2D(ViTSide):
    """UNETR-2D (§3.1). Defaults: the best settings of Tables 5.1-5.2 and App. B (BN, no dropout,
    ReLU, He normal, F = 32). `dropout` is a float or one rate per level 0..K (the last one, the
    bottleneck's, is unused: UNETR-2D has no convolution there); `vit_dropout` is the ViT's.
    """

    def __init__(self, size="mini", filters=32, img_size=256, patch_size=16, in_channels=1, batch_norm=True,
                 dropout=0.0, activation="relu", init="he_normal", vit_dropout=0.1, head_dim=None,
                 fused_attention=False):
        kw = dict(batch_norm=batch_norm, activation=activation, init=init)
        super().__init__(size, filters, img_size, patch_size, in_channels, dropout, vit_dropout, head_dim,
                         fused_attention, **kw)
        # Each level concatenates [decoder, ViT skip]: 2 inputs; the bottleneck is the ViT's D channels.
        self.ups, self.decoder = decoder_path(self.config.embed_dim, self.widths, self.rates, n_inputs=2,
                                              **kw)
        self.head = conv1x1(filters, 1)

    def forward(self, x):
        K = self.n_levels
        hidden = self.encoder(x)  # L x (B, N, D); checks the input size
        y = self.ups[K - 1](self.vit_bottom(hidden))  # (B, F*2^(K-1), H/2^(K-1), W/2^(K-1))
        for level in reversed(range(1, K)):
            z = self.vit_skip(level, hidden, x)  # (B, F*2^l, H/2^l, W/2^l)
            y = self.decoder[level](cat_channels([y, z]))  # (B, F*2^l, H/2^l, W/2^l)
            y = self.ups[level - 1](y)  # (B, F*2^(l-1), H/2^(l-1), W/2^(l-1))
        first_skip = self.vit_skip(0, hidden, x)  # (B, F, H, W)
        y = self.decoder[0](cat_channels([first_skip, y]))  # (B, F, H, W)
        return self.head(y)  # (B, 1, H, W) logits


if __name__ == "__main__":
    def n_params(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    for size, filters, thesis in [("mini", 32, "4.24M"), ("small", 32, "9.34M"), ("base", 32, "48.7M"),
                                  ("base", 8, "44.7M"), ("base", 16, "45.6M"), ("base", 64, "60.2M")]:
        model = UNETR2D(size, filters=filters)
        print(f"UNETR-2D {size:5s} F={filters:<3d} params {n_params(model):>11,d}  thesis {thesis}")
    print("output", tuple(UNETR2D("mini").eval()(torch.zeros(1, 1, 256, 256)).shape))
