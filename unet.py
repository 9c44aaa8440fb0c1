"""U-Net, Attention U-Net and Attention Y-Net: the convolutional baselines of the thesis.

Thesis: §2.1 (U-Net, attention gates, Y-Net), Fig. 2.1, Fig. 2.2, Table 5.1 (ablation knobs),
Table 5.4 (1.95M / 1.99M parameters), App. A "Multi-task neural networks", Fig. A.1.
Papers: Ronneberger et al. 2015 (U-Net); Franco-Barranco et al. 2021, ref. [34] (the 2D U-Net
family for mitochondria whose code the thesis ran); Schlemper/Oktay et al. 2019, ref. [41]
(attention gates); Roels et al. 2019, ref. [43] (Y-Net).

Where we differ from the thesis code: the models return logits (the sigmoid lives in the loss);
the Attention Y-Net's reconstruction head is bounded by a sigmoid (the reference code left it
linear) because its target, the input image, lies in [0, 1].

The convolution blocks, the Keras-style initialisers, `level_rates` and the decoders' concatenation
(`cat_channels`) are shared with unetr2d.py and ynetr2d.py; the encoder (`cnn_encoder`, `cnn_encode`)
with ynetr2d.py.

Shape legend: B batch, C channels, H x W image, F initial filters; level i has F * 2^i channels
at H / 2^i x W / 2^i.
"""
import math

import torch
import torch.nn as nn

import attention

# Keras's truncated normal keeps |x| < 2 std; this is the std of a unit normal cut there, so
# dividing by it makes the *truncated* distribution have the target variance (Keras VarianceScaling).
TRUNCATED_NORMAL_STD = 0.87962566103423978
# Table 5.1, App. B Table 2. ReLU overwrites its input (inplace): in a conv block nothing else reads that
# tensor (the convolution's and BatchNorm's backward keep their own inputs), so the same numbers come out
# with one full-resolution tensor fewer per block (docs/speed.md). ELU stays out of place: its in-place
# backward works from the output, which rounds differently.
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "elu": nn.ELU, "gelu": nn.GELU}


def cat_channels(tensors):
    """torch.cat(tensors, dim=1): a decoder level's concatenation of its inputs (Fig. 2.1, Fig. 3.1).

    For speed only; every number stays the same. The backward of a concatenation hands each input a
    channel slice of the gradient. In channels-last memory such a slice is strided (each pixel's channels
    are contiguous, the pixels are not), and torch's elementwise kernels, the backward of the ReLU or GELU
    that made the input among them, run without SIMD over it: 5-10x slower on a CPU than over a dense
    tensor. So an input in channels-last memory gets its slice back as a dense copy (docs/speed.md).
    """
    for t in tensors:
        if t.requires_grad and t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
            t.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
    return torch.cat(tensors, dim=1)


def _fans(weight):
    """Keras fans: (fan_in, fan_out) = (dim 1, dim 0) times the kernel's receptive field."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def glorot_uniform_(weight):
    """Glorot (Xavier) uniform [71] with Keras fans: attention.glorot_uniform_ (the one formula)."""
    return attention.glorot_uniform_(weight, *_fans(weight))


@torch.no_grad()
def he_normal_(weight):
    """He normal [61] as Keras draws it: a normal cut at 2 std whose variance after the cut is 2 / fan_in."""
    fan_in, _ = _fans(weight)
    std = math.sqrt(2.0 / fan_in) / TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


INITIALISERS = {"glorot_uniform": glorot_uniform_, "he_normal": he_normal_}


def level_rates(dropout, n_levels):
    """A float, or one dropout rate per level (the thesis list 0.1, 0.1, 0.2, 0.2, 0.3, §5.1.1)."""
    if isinstance(dropout, (int, float)):
        return [float(dropout)] * n_levels
    rates = [float(r) for r in dropout]
    if len(rates) != n_levels:
        raise ValueError(f"dropout needs one rate per level ({n_levels}), got {len(rates)}")
    return rates


def conv1x1(in_ch, out_ch):
    """A 1x1 convolution, Glorot uniform and zero bias (the thesis code never passes the init knob)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    glorot_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def up_conv(in_ch, out_ch):
    """Transpose convolution 2x2 stride 2 (doubles H and W), Glorot uniform and zero bias."""
    conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
    glorot_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def batch_norm_2d(channels):
    """BatchNorm with Keras's constants (eps 1e-3, running average kept at 0.99)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class ConvBlock(nn.Module):
    """Conv3x3 'same' -> [BatchNorm] -> activation -> [Dropout] (a "yellow block" of Fig. 2.6)."""

    def __init__(self, in_ch, out_ch, batch_norm=False, activation="relu", dropout=0.0, init="he_normal"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        INITIALISERS[init](self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.norm = batch_norm_2d(out_ch) if batch_norm else nn.Identity()
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        x = self.act(self.norm(self.conv(x)))  # (B, C_out, H, W)
        return self.drop(x)  # (B, C_out, H, W)


class DoubleBlock(nn.Module):
    """Two conv blocks; dropout only after the first, as in ref. [34] and the thesis code."""

    def __init__(self, in_ch, out_ch, batch_norm=False, activation="relu", dropout=0.0, init="he_normal"):
        super().__init__()
        self.first = ConvBlock(in_ch, out_ch, batch_norm, activation, dropout, init)
        self.second = ConvBlock(out_ch, out_ch, batch_norm, activation, 0.0, init)

    def forward(self, x):
        x = self.first(x)  # (B, C_out, H, W)
        return self.second(x)  # (B, C_out, H, W)


class AttentionGate(nn.Module):
    """Attention gate of Fig. 2.2: one coefficient alpha in (0, 1) per pixel.

    alpha = sigmoid(psi(ReLU(W_skip * skip + W_up * up))), all 1x1 convolutions with f channels
    (f -> 1 for psi), BatchNorm after each when `batch_norm`.
    mode "up" (default) is what the code of ref. [34] computes, and so what produced the thesis's
    Attention U-Net numbers: alpha rescales the *upsampled decoder signal*, the decoder concatenates
    [up, up * alpha], and the encoder skip only steers the gate. mode "skip" is the gate of
    Schlemper/Oktay et al. [41]: alpha rescales the *skip*, giving [up, skip * alpha], so the encoder
    features reach the decoder only where the gate lets them. Both have the same parameters.
    """

    def __init__(self, channels, batch_norm=False, mode="up"):
        super().__init__()
        if mode not in ("up", "skip"):
            raise ValueError(f"mode must be 'up' or 'skip', got {mode!r}")
        self.mode = mode
        self.skip_proj = conv1x1(channels, channels)
        self.up_proj = conv1x1(channels, channels)
        self.psi = conv1x1(channels, 1)
        self.skip_norm = batch_norm_2d(channels) if batch_norm else nn.Identity()
        self.up_norm = batch_norm_2d(channels) if batch_norm else nn.Identity()
        self.psi_norm = batch_norm_2d(1) if batch_norm else nn.Identity()

    def coefficients(self, skip, up):
        g = self.skip_norm(self.skip_proj(skip))  # (B, f, H, W)
        u = self.up_norm(self.up_proj(up))  # (B, f, H, W)
        return torch.sigmoid(self.psi_norm(self.psi(torch.relu(g + u))))  # (B, 1, H, W)

    def forward(self, skip, up):
        alpha = self.coefficients(skip, up)  # (B, 1, H, W)
        return (up if self.mode == "up" else skip) * alpha  # (B, f, H, W)


def cnn_encoder(in_channels, widths, rates, **block_kw):
    """The U-Net encoder of Fig. 2.1 (left), shared with YNETR-2D -> (blocks, bottleneck).

    blocks[i] is level i's double block (to widths[i] filters, dropout rates[i]) for the levels
    0 .. depth-1, depth = len(widths) - 1; the bottleneck double block goes to widths[depth].
    """
    depth = len(widths) - 1
    blocks = nn.ModuleList(
        DoubleBlock(in_channels if i == 0 else widths[i - 1], widths[i], dropout=rates[i], **block_kw)
        for i in range(depth))
    bottleneck = DoubleBlock(widths[depth - 1], widths[depth], dropout=rates[depth], **block_kw)
    return blocks, bottleneck


def cnn_encode(blocks, bottleneck, x):
    """Run `cnn_encoder`'s modules: double block and 2x2 max-pooling per level, then the bottleneck.

    Returns the bottleneck output and the skips, one per level (top first).
    """
    skips = []
    for i, block in enumerate(blocks):
        x = block(x)  # (B, F*2^i, H/2^i, W/2^i)
        skips.append(x)
        x = nn.functional.max_pool2d(x, 2)  # (B, F*2^i, H/2^(i+1), W/2^(i+1))
    return bottleneck(x), skips  # (B, 16F, H/16, W/16), depth x (B, F*2^i, H/2^i, W/2^i)


class UNet(nn.Module):
    """2D U-Net of ref. [34] (Fig. 2.1); defaults are the best U-Net of Table 5.1.

    Encoder: `depth` levels of a double block (F * 2^i filters) and 2x2 max-pooling, then a
    bottleneck double block (F * 2^depth). Decoder, per level: transpose conv to the level's
    filters, concatenate [up, skip] (or [up, gated] with attention gates), double block. A final
    1x1 conv gives one logit channel. A level's dropout rate is used in its encoder and decoder
    double blocks; the last rate belongs to the bottleneck.
    """

    def __init__(self, in_channels=1, filters=16, depth=4, batch_norm=False,
                 dropout=(0.1, 0.1, 0.2, 0.2, 0.3), activation="elu", init="he_normal", attention_gates=False,
                 gate_mode="up"):
        super().__init__()
        self.depth = depth
        self.rates = rates = level_rates(dropout, depth + 1)
        self.widths = widths = [filters * 2**i for i in range(depth + 1)]  # F, 2F, 4F, 8F, 16F
        kw = dict(batch_norm=batch_norm, activation=activation, init=init)
        self.encoder, self.bottleneck = cnn_encoder(in_channels, widths, rates, **kw)
        # ups[i] and decoder[i] work at level i; they are run from level depth-1 up to 0.
        self.ups = nn.ModuleList(up_conv(widths[i + 1], widths[i]) for i in range(depth))
        self.gates = nn.ModuleList(AttentionGate(widths[i], batch_norm, gate_mode) for i in range(depth)) \
            if attention_gates else None
        self.decoder = nn.ModuleList(
            DoubleBlock(2 * widths[i], widths[i], dropout=rates[i], **kw) for i in range(depth))
        self.head = conv1x1(filters, 1)

    def check_size(self, x):
        B, C, H, W = x.shape
        step = 2**self.depth
        if H % step or W % step:
            raise ValueError(f"{type(self).__name__} needs H and W divisible by {step}, got {H}x{W}")

    def encode(self, x):
        """Returns the bottleneck and the skips, one per level (top first)."""
        self.check_size(x)
        return cnn_encode(self.encoder, self.bottleneck,
                          x)  # (B, 16F, H/16, W/16), depth x (B, F*2^i, H/2^i, W/2^i)

    def decode(self, x, skips):
        for i in reversed(range(self.depth)):
            up = self.ups[i](x)  # (B, F*2^i, H/2^i, W/2^i)
            skip = skips[i] if self.gates is None else self.gates[i](skips[i], up)  # (B, F*2^i, H/2^i, W/2^i)
            x = self.decoder[i](cat_channels([up, skip]))  # (B, F*2^i, H/2^i, W/2^i)
        return self.head(x)  # (B, 1, H, W)

    def forward(self, x):
        bottom, skips = self.encode(x)  # (B, 16F, H/16, W/16), skips
        return self.decode(bottom, skips)  # (B, 1, H, W) logits


class AttentionUNet(UNet):
    """2D Attention U-Net of ref. [34] (Fig. 2.2): the U-Net with an attention gate on every skip."""

    def __init__(self, **kwargs):
        kwargs["attention_gates"] = True
        super().__init__(**kwargs)


class AttentionYNet(UNet):
    """Attention Y-Net (App. A, Fig. A.1): an Attention U-Net whose encoder and bottleneck also
    feed a second decoder that reconstructs the input, with no skip connections (per level:
    transpose conv + double block; then a 1x1 conv). The reference code
    (danifranco/EM_domain_adaptation) left the reconstruction head linear; we bound it to [0, 1]
    with a sigmoid, since the inputs are in [0, 1]. Defaults: its settings there (32 filters, ELU,
    He normal, dropout 0.1, 0.1, 0.2, 0.2, 0.3, no BN).
    """

    def __init__(self, in_channels=1, filters=32, depth=4, batch_norm=False,
                 dropout=(0.1, 0.1, 0.2, 0.2, 0.3), activation="elu", init="he_normal", gate_mode="up"):
        super().__init__(in_channels, filters, depth, batch_norm, dropout, activation, init,
                         attention_gates=True, gate_mode=gate_mode)
        rates, widths = self.rates, self.widths
        kw = dict(batch_norm=batch_norm, activation=activation, init=init)
        self.recon_ups = nn.ModuleList(up_conv(widths[i + 1], widths[i]) for i in range(depth))
        self.recon_decoder = nn.ModuleList(
            DoubleBlock(widths[i], widths[i], dropout=rates[i], **kw) for i in range(depth))
        self.recon_head = conv1x1(filters, in_channels)

    def encoder_modules(self):
        """The blocks above the bottleneck: frozen in stage 3 of App. A (bottleneck and decoders train)."""
        return list(self.encoder)

    def reconstruct(self, x):
        for i in reversed(range(self.depth)):
            x = self.recon_ups[i](x)  # (B, F*2^i, H/2^i, W/2^i)
            x = self.recon_decoder[i](x)  # (B, F*2^i, H/2^i, W/2^i)
        return torch.sigmoid(self.recon_head(x))  # (B, C, H, W) in [0, 1]

    def forward(self, x):
        bottom, skips = self.encode(x)  # (B, 16F, H/16, W/16), skips
        return self.decode(bottom, skips), self.reconstruct(bottom)  # (B, 1, H, W) logits, (B, C, H, W)


if __name__ == "__main__":
    def n_params(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    for name, model, thesis in [("U-Net (F=16)", UNet(), "1.95M"),
                                ("Attention U-Net (F=16)", AttentionUNet(), "1.99M"),
                                ("Attention Y-Net (F=32)", AttentionYNet(), "-")]:
        out = model(torch.zeros(1, 1, 64, 64))
        shape = tuple(out[0].shape) if isinstance(out, tuple) else tuple(out.shape)
        print(f"{name:24s} out {shape}  params {n_params(model):>10,d}  thesis {thesis}")
