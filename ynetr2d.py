"""YNETR-2D: UNETR-2D with a second, convolutional (U-Net) encoder and one shared decoder.

Thesis: §3.2 and Fig. 3.1 (YNETR-2D), §5.2 (the spatial dropouts), Table 5.3 (Mini / Small / Base
and S_m), Table 5.4 (10.3M / 15.4M / 54.7M). Papers: Hatamizadeh et al. 2021, ref. [33] (UNETR);
Mohammed et al. 2018, ref. [42] (a Y-Net with a second encoder).

Both encoders read the same input. The ViT's hidden states are reshaped and brought to each
level's resolution by the blue blocks of UNETR-2D (unetr2d.ViTSide); the U-Net encoder
(unet.cnn_encoder: double blocks F, 2F, 4F, 8F with max-pooling, bottleneck 16F at H/16) gives
the other skips. Bottleneck: [ViT output, CNN bottleneck] -> spatial dropout -> transpose conv.
Every level concatenates [ViT skip, decoder signal, CNN skip] and applies spatial dropout
(Dropout2d) with the level's rate before its double block; level 0 uses a separate double block
on the raw input as its ViT-side skip, so the model has two level-0 double blocks, as in the
thesis code (sharing one would remove only 9.7k parameters for F = 32, so the counts of Table 5.4
cannot tell the two wirings apart). Concatenation orders follow the thesis code.
Where we differ from the thesis code: logits out (sigmoid in the loss); its CNN bottleneck used
level 3's dropout rate by a slip of index, we use the bottleneck's (level 4) rate.

Shape legend: B batch, C channels, H x W image, P patch side, N = HW/P^2 tokens, D hidden size,
L layers, F initial filters; level l has F * 2^l channels at H / 2^l x W / 2^l.
"""
import torch
import torch.nn as nn

from unet import cat_channels, cnn_encode, cnn_encoder, conv1x1, level_rates
from unetr2d import ViTSide, decoder_path


class YNETR2D(ViTSide):
    """YNETR-2D (§3.2, Fig. 3.1). Defaults: the settings of §5.2 (UNETR-2D's best plus dropout
    0.1, 0.1, 0.2, 0.2, 0.3 in the blocks and the same rates in the spatial dropouts).
    `dropout` and `spatial_dropout` take a float or one rate per level 0..K (K = log2(P); rate K
    belongs to the bottleneck).
    """

    def __init__(self, size="mini", filters=32, img_size=256, patch_size=16, in_channels=1, batch_norm=True,
                 dropout=(0.1, 0.1, 0.2, 0.2, 0.3), spatial_dropout=(0.1, 0.1, 0.2, 0.2, 0.3),
                 activation="relu", init="he_normal", vit_dropout=0.1, head_dim=None, fused_attention=False):
        kw = dict(batch_norm=batch_norm, activation=activation, init=init)
        # The ViT side, as in UNETR-2D: encoder, skips[0] on the raw input, skips[l] = K - l blue blocks.
        super().__init__(size, filters, img_size, patch_size, in_channels, dropout, vit_dropout, head_dim,
                         fused_attention, **kw)
        K, D, rates, widths = self.n_levels, self.config.embed_dim, self.rates, self.widths
        # The U-Net encoder (Fig. 3.1, left).
        self.cnn_encoder, self.cnn_bottleneck = cnn_encoder(in_channels, widths, rates, **kw)
        # The decoder: drops[l] after level l's concatenation (drops[K] at the bottleneck).
        self.drops = nn.ModuleList(nn.Dropout2d(p) if p > 0 else nn.Identity()
                                   for p in level_rates(spatial_dropout, K + 1))
        # Each level concatenates [ViT skip, decoder, CNN skip]; the bottleneck is [ViT output,
        # CNN bottleneck].
        self.ups, self.decoder = decoder_path(D + widths[K], widths, rates, n_inputs=3, **kw)
        self.head = conv1x1(filters, 1)

    def forward(self, x):
        K = self.n_levels
        hidden = self.encoder(x)  # L x (B, N, D); first, so a wrong input size gets the ViT's message
        c, cnn_skips = cnn_encode(self.cnn_encoder, self.cnn_bottleneck, x)  # (B, 16F, H/16, W/16), K skips
        y = self.drops[K](cat_channels([self.vit_bottom(hidden), c]))  # (B, D + 16F, H/16, W/16)
        y = self.ups[K - 1](y)  # (B, 8F, H/8, W/8)
        for level in reversed(range(1, K)):
            z = self.vit_skip(level, hidden, x)  # (B, F*2^l, H/2^l, W/2^l)
            y = self.drops[level](cat_channels([z, y, cnn_skips[level]]))  # (B, 3F*2^l, H/2^l, W/2^l)
            y = self.decoder[level](y)  # (B, F*2^l, H/2^l, W/2^l)
            y = self.ups[level - 1](y)  # (B, F*2^(l-1), H/2^(l-1), W/2^(l-1))
        first_skip = self.vit_skip(0, hidden, x)  # (B, F, H, W)
        y = self.drops[0](cat_channels([first_skip, y, cnn_skips[0]]))  # (B, 3F, H, W)
        y = self.decoder[0](y)  # (B, F, H, W)
        return self.head(y)  # (B, 1, H, W) logits


if __name__ == "__main__":
    def n_params(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    for size, thesis in [("mini", "10.3M"), ("small", "15.4M"), ("base", "54.7M")]:
        model = YNETR2D(size)
        print(f"YNETR-2D {size:5s} F=32 params {n_params(model):>11,d}  thesis {thesis}")
    print("output", tuple(YNETR2D("mini").eval()(torch.zeros(1, 1, 256, 256)).shape))
