"""YNETR-2D: UNETR-2D with a second, convolutional (U-Net) encoder and one shared decoder.

Thesis: §3.2 and Fig. 3.1 (YNETR-2D), §5.2 (the spatial dropouts), Table 5.3 (Mini / Small / Base
and S_m), Table 5.4 (10.3M / 15.4M / 54.7M). Papers: Hatamizadeh et al. 2021, ref. [33] (UNETR);
Mohammed et al. 2018, ref. [42] (a Y-Net with a second encoder).

Both encoders read the same input. The ViT's hidden states are reshaped and brought to each
level's resolution by the blue blocks of UNETR-2D (unetr2d.py); the U-Net encoder (double blocks
F, 2F, 4F, 8F with max-pooling, bottleneck 16F at H/16) gives the other skips. Bottleneck:
[ViT output, CNN bottleneck] -> spatial dropout -> transpose conv. Every level concatenates
[ViT skip, decoder signal, CNN skip] and applies spatial dropout (Dropout2d) with the level's rate
before its double block; level 0 uses a separate double block on the raw input as its ViT-side
skip, so the model has two level-0 double blocks, as in the thesis code (sharing one would remove
only 9.7k parameters for F = 32, so the counts of Table 5.4 cannot tell the two wirings apart).
Concatenation orders follow the thesis code.
Where we differ from the thesis code: logits out (sigmoid in the loss); its CNN bottleneck used
level 3's dropout rate by a slip of index, we use the bottleneck's (level 4) rate.

Shape legend: B batch, C channels, H x W image, P patch side, N = HW/P^2 tokens, D hidden size,
L layers, F initial filters; level l has F * 2^l channels at H / 2^l x W / 2^l.
"""
import math

import torch
import torch.nn as nn

import vit
from unet import DoubleBlock, conv1x1, level_rates, up_conv
from unetr2d import skip_path, skip_taps


class YNETR2D(nn.Module):
    """YNETR-2D (§3.2, Fig. 3.1). Defaults: the settings of §5.2 (UNETR-2D's best plus dropout
    0.1, 0.1, 0.2, 0.2, 0.3 in the blocks and the same rates in the spatial dropouts).
    `dropout` and `spatial_dropout` take a float or one rate per level 0..K (K = log2(P); rate K
    belongs to the bottleneck).
    """

    def __init__(self, size="mini", filters=32, img_size=256, patch_size=16, in_channels=1, batch_norm=True,
                 dropout=(0.1, 0.1, 0.2, 0.2, 0.3), spatial_dropout=(0.1, 0.1, 0.2, 0.2, 0.3), activation="relu",
                 init="he_normal", vit_dropout=0.1, head_dim=None):
        super().__init__()
        self.config = vit.CONFIGS[size]
        self.img_size, self.patch_size = img_size, patch_size
        self.n_levels = K = int(round(math.log2(patch_size)))  # K = log2(P) = 4 for P = 16
        if 2**K != patch_size or img_size % patch_size:
            raise ValueError(f"patch_size must be a power of 2 dividing img_size, got {patch_size} and {img_size}")
        self.grid = img_size // patch_size
        self.skip_layers = skip_taps(self.config.n_layers, self.config.skip_step, K)
        self.encoder = vit.ViTEncoder.from_config(self.config, img_size=img_size, patch_size=patch_size,
                                                  in_channels=in_channels, dropout=vit_dropout, head_dim=head_dim)
        D = self.config.embed_dim
        rates = level_rates(dropout, K + 1)
        spatial = level_rates(spatial_dropout, K + 1)
        widths = [filters * 2**level for level in range(K + 1)]  # F, 2F, 4F, 8F, 16F
        kw = dict(batch_norm=batch_norm, activation=activation, init=init)
        # The U-Net encoder (Fig. 3.1, left).
        self.cnn_encoder = nn.ModuleList(
            DoubleBlock(in_channels if level == 0 else widths[level - 1], widths[level], dropout=rates[level], **kw)
            for level in range(K))
        self.pool = nn.MaxPool2d(2)
        self.cnn_bottleneck = DoubleBlock(widths[K - 1], widths[K], dropout=rates[K], **kw)
        # The ViT side, as in UNETR-2D: skips[0] on the raw input, skips[l] = K - l blue blocks.
        self.skips = nn.ModuleList(
            [DoubleBlock(in_channels, filters, dropout=rates[0], **kw)]
            + [skip_path(D, widths[level], K - level, dropout=rates[level], **kw) for level in range(1, K)])
        # The decoder: drops[l] after level l's concatenation (drops[K] at the bottleneck).
        self.drops = nn.ModuleList(nn.Dropout2d(p) if p > 0 else nn.Identity() for p in spatial)
        self.ups = nn.ModuleList(up_conv(D + widths[K] if level == K - 1 else widths[level + 1], widths[level])
                                 for level in range(K))
        self.decoder = nn.ModuleList(DoubleBlock(3 * widths[level], widths[level], dropout=rates[level], **kw)
                                     for level in range(K))
        self.head = conv1x1(filters, 1)

    def check_size(self, x):
        B, C, H, W = x.shape
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError(f"{type(self).__name__} takes {self.img_size}x{self.img_size} inputs, got {H}x{W}")

    def forward(self, x):
        self.check_size(x)
        K, g = self.n_levels, self.grid
        # U-Net encoder
        cnn_skips, c = [], x
        for level, block in enumerate(self.cnn_encoder):
            c = block(c)  # (B, F*2^l, H/2^l, W/2^l)
            cnn_skips.append(c)
            c = self.pool(c)  # (B, F*2^l, H/2^(l+1), W/2^(l+1))
        c = self.cnn_bottleneck(c)  # (B, 16F, H/16, W/16)
        # ViT encoder
        hidden = self.encoder(x)  # L x (B, N, D)
        z = vit.tokens_to_image(hidden[-1], g)  # (B, D, H/P, W/P)
        y = self.drops[K](torch.cat([z, c], dim=1))  # (B, D + 16F, H/16, W/16)
        y = self.ups[K - 1](y)  # (B, 8F, H/8, W/8)
        for level in reversed(range(1, K)):
            z = vit.tokens_to_image(hidden[self.skip_layers[level - 1] - 1], g)  # (B, D, H/P, W/P)
            z = self.skips[level](z)  # (B, F*2^l, H/2^l, W/2^l)
            y = self.drops[level](torch.cat([z, y, cnn_skips[level]], dim=1))  # (B, 3F*2^l, H/2^l, W/2^l)
            y = self.decoder[level](y)  # (B, F*2^l, H/2^l, W/2^l)
            y = self.ups[level - 1](y)  # (B, F*2^(l-1), H/2^(l-1), W/2^(l-1))
        first_skip = self.skips[0](x)  # (B, F, H, W)
        y = self.drops[0](torch.cat([first_skip, y, cnn_skips[0]], dim=1))  # (B, 3F, H, W)
        y = self.decoder[0](y)  # (B, F, H, W)
        return self.head(y)  # (B, 1, H, W) logits


if __name__ == "__main__":
    def n_params(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    for size, thesis in [("mini", "10.3M"), ("small", "15.4M"), ("base", "54.7M")]:
        model = YNETR2D(size)
        print(f"YNETR-2D {size:5s} F=32 params {n_params(model):>11,d}  thesis {thesis}")
    print("output", tuple(YNETR2D("mini").eval()(torch.zeros(1, 1, 256, 256)).shape))
