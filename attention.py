"""Multi-head self-attention, written out by hand.

Thesis: §2.2.1.1, Eq. 2.1, Fig. 2.4 (the Transformer of Vaswani et al. [7], "Attention is all you need",
NeurIPS 2017). Query, key and value come from the same tokens; each goes through its own linear map,
every head computes softmax(QK^T / sqrt(d_k)) V, the heads are concatenated and a last linear map mixes
them back to the hidden size D.

Where we follow the thesis code rather than [7]: that code used Keras `MultiHeadAttention(num_heads=h,
key_dim=D)`, so by default *every head has the full width d = D* and the projections are D -> h*D and
h*D -> D. This reproduces the thesis's parameter counts (Table 5.2, 5.4). `head_dim=D // h` gives the
layout of [7] (and of `torch.nn.MultiheadAttention`). Attention dropout acts on the attention weights, as
in [7] and Keras. Initialisation is Glorot uniform with the fans Keras computes for its 3-D attention
kernels (see `MultiHeadSelfAttention.reset_parameters`), zero biases.

`fused=True` computes Eq. 2.1 with torch's `F.scaled_dot_product_attention` (one fused kernel, flash or
memory-efficient attention on a GPU) instead of the lines below; the result is the same to float
rounding, and the attention weights, which the fused kernel never forms, come from the hand-written
path whenever they are asked for. The written-out version stays the default: it is the lesson.

Shape legend: B batch, N tokens, D hidden size, h heads, d head width.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def glorot_uniform_(weight, fan_in, fan_out):
    """Fill `weight` in place from U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def scaled_dot_product_attention(q, k, v, dropout=0.0, training=False):
    """Eq. 2.1 for every head at once (Fig. 2.4, left).

    q, k, v: (B, h, N, d). Returns (out (B, h, N, d), weights (B, h, N, N)). `weights` are the attention
    probabilities before dropout (every row sums to 1), the map one visualises; when `training` and
    `dropout` > 0 the output is computed from the dropped-out (and rescaled) weights, as in [7].
    """
    assert q.dim() == 4 and q.shape[:2] == k.shape[:2] and q.shape[-1] == k.shape[-1], \
        f"q and k must be (B, h, N, d), got {tuple(q.shape)}, {tuple(k.shape)}"
    assert v.shape[:3] == k.shape[:3], (f"v must be (B, h, N, d_v) like k, got {tuple(v.shape)} vs "
                                        f"{tuple(k.shape)}")
    d_k = q.shape[-1]
    # Eq. 2.1: scores QK^T / sqrt(d_k), scaled so the softmax does not saturate (§2.2.1.1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (B, h, N, N)
    weights = torch.softmax(scores, dim=-1)  # (B, h, N, N), rows sum to 1
    dropped = F.dropout(weights, p=dropout, training=training)  # (B, h, N, N)
    # Eq. 2.1: the attention matrix multiplies the value signal
    out = dropped @ v  # (B, h, N, d)
    return out, weights


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention block (§2.2.1.1, Fig. 2.4 right): (B, N, D) -> (B, N, D).

    head_dim=None gives every head the full width D, as the thesis code (Keras `key_dim=D`);
    head_dim=D // n_heads gives the layout of [7]. Parameters: 3 * (D*h*d + h*d) + h*d*D + D.

    The weights map one to one onto a Keras `MultiHeadAttention`: the query kernel of shape (D, h, d) is
    `q_proj.weight.T` viewed as (D, h, d) (heads outermost in the h*d axis), and the output kernel
    (h, d, D) is `out_proj.weight.T` viewed as (h, d, D).
    """

    def __init__(self, embed_dim, n_heads, head_dim=None, dropout=0.0, fused=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.n_heads = n_heads
        self.head_dim = embed_dim if head_dim is None else head_dim
        self.dropout = dropout
        self.fused = fused  # torch's fused kernel for Eq. 2.1; the same numbers, never the weights
        inner = n_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """Glorot uniform kernels, zero biases, with the fans of the thesis code's Keras kernels.

        Keras stores the query/key/value kernels as (D, h, d) and the output kernel as (h, d, D), and
        for a kernel of rank > 2 takes every axis but the last two as a "receptive field": fan_in =
        h*D, fan_out = d*D for the projections and fan_in = h*d, fan_out = h*D for the output. This
        is NOT what `nn.init.xavier_uniform_` gives on the equivalent 2-D Linear weight (fan_in = D,
        fan_out = h*d): for the thesis's mini layout (D=64, h=4, d=D) the Keras bound is 3.7x
        smaller, so we pass the Keras fans explicitly.
        """
        D, h, d = self.embed_dim, self.n_heads, self.head_dim
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            glorot_uniform_(proj.weight, fan_in=h * D, fan_out=d * D)
            nn.init.zeros_(proj.bias)
        glorot_uniform_(self.out_proj.weight, fan_in=h * d, fan_out=h * D)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, return_weights=False):
        B, N, D = x.shape
        assert D == self.embed_dim, f"expected hidden size {self.embed_dim}, got {D}"
        h, d = self.n_heads, self.head_dim
        # Fig. 2.4: one linear map per signal, then split the h*d features into h heads
        q = self.q_proj(x).view(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        k = self.k_proj(x).view(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        v = self.v_proj(x).view(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        if self.fused and not return_weights:
            # Eq. 2.1 in one kernel; its default scale is 1/sqrt(d), as ours (dropout draws other masks)
            p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, N, d)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, self.dropout,
                                                        self.training)  # (B, h, N, d), (B, h, N, N)
        # Fig. 2.4: concatenate the heads, then the final linear transformation
        out = out.transpose(1, 2).reshape(B, N, h * d)  # (B, N, h*d)
        out = self.out_proj(out)  # (B, N, D)
        if return_weights:
            return out, weights
        return out

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
                f"dropout={self.dropout}" + (", fused=True" if self.fused else ""))
