"""attention.py against torch's own attention (copied weights), a float64 einsum reference, closed forms."""
import math

import pytest
import torch
import torch.nn as nn

from attention import MultiHeadSelfAttention, scaled_dot_product_attention

pytestmark = pytest.mark.ex1  # every test here runs Eq. 2.1 (course exercise 1)


def _reference_mhsa(x, attn):
    """Eq. 2.1 per head with einsum in float64, from the module's parameters only."""
    D, h, d = attn.embed_dim, attn.n_heads, attn.head_dim

    def project(lin):  # (B, N, D) -> (B, h, N, d)
        w = lin.weight.view(h, d, D)
        return torch.einsum("bnk,hdk->bhnd", x, w) + lin.bias.view(1, h, 1, d)

    q, k, v = project(attn.q_proj), project(attn.k_proj), project(attn.v_proj)
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(d)
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    weights = e / e.sum(dim=-1, keepdim=True)
    heads = torch.einsum("bhnm,bhmd->bhnd", weights, v)
    out = torch.einsum("bhnd,ehd->bne", heads, attn.out_proj.weight.view(D, h, d)) + attn.out_proj.bias
    return out, weights


@pytest.mark.ex2
def test_vaswani_layout_matches_torch_multihead_attention():
    torch.manual_seed(0)
    B, N, D, h = 2, 7, 12, 3
    ours = MultiHeadSelfAttention(D, h, head_dim=D // h).double().eval()
    ref = nn.MultiheadAttention(D, h, bias=True, batch_first=True).double().eval()
    with torch.no_grad():
        for p in ours.parameters():  # zero biases from init would hide a bias bug
            p.normal_(0, 0.5)
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)

    x1 = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    out1, w1 = ours(x1, return_weights=True)
    out2, w2 = ref(x2, x2, x2, need_weights=True, average_attn_weights=False)
    _, w2_mean = ref(x2, x2, x2, need_weights=True)
    torch.testing.assert_close(out1, out2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w1, w2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w1.mean(dim=1), w2_mean, rtol=1e-10, atol=1e-12)

    g = torch.randn(B, N, D, dtype=torch.float64)
    (out1 * g).sum().backward()
    (out2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    in_grad = torch.cat([ours.q_proj.weight.grad, ours.k_proj.weight.grad, ours.v_proj.weight.grad])
    torch.testing.assert_close(in_grad, ref.in_proj_weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.out_proj.weight.grad, ref.out_proj.weight.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.ex2
def test_full_width_layout_matches_einsum_reference():
    torch.manual_seed(1)
    B, N, D, h = 2, 5, 8, 4
    attn = MultiHeadSelfAttention(D, h).double().eval()
    assert attn.head_dim == D
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x1 = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    out1, w1 = attn(x1, return_weights=True)
    out2, w2 = _reference_mhsa(x2, attn)
    assert out1.shape == (B, N, D) and w1.shape == (B, h, N, N)
    torch.testing.assert_close(out1, out2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w1, w2, rtol=1e-10, atol=1e-12)
    g = torch.randn(B, N, D, dtype=torch.float64)
    (out1 * g).sum().backward()
    (out2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.ex2
def test_attention_weights_are_row_stochastic():
    torch.manual_seed(2)
    attn = MultiHeadSelfAttention(16, 2)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 1.0)  # large logits: a naive exp would overflow somewhere
    _, w = attn(10 * torch.randn(3, 9, 16), return_weights=True)
    assert torch.isfinite(w).all() and (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(3, 2, 9))


def test_identical_keys_give_the_mean_of_the_values():
    # closed form: equal scores -> uniform weights 1/N -> every query gets the mean value
    torch.manual_seed(3)
    q = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    k = torch.randn(1, 2, 1, 4, dtype=torch.float64).expand(1, 2, 6, 4)
    v = torch.randn(1, 2, 6, 3, dtype=torch.float64)
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 6))
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand_as(out))


def test_scale_is_one_over_sqrt_dk():
    # two keys, one query: softmax over [q.k1, q.k2] / sqrt(d) has the closed form sigmoid(diff / sqrt(d))
    d = 9
    q = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 2, d, dtype=torch.float64)
    k[..., 0, 0] = 6.0
    v = torch.eye(2, dtype=torch.float64).view(1, 1, 2, 2)
    _, w = scaled_dot_product_attention(q, k, v)
    assert w[0, 0, 0, 0].item() == pytest.approx(1 / (1 + math.exp(-6.0 / 3.0)), rel=1e-12)


def test_dropout_acts_on_the_weights_only_in_training():
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    out_eval, w_eval = scaled_dot_product_attention(q, k, v, dropout=0.5, training=False)
    out_plain, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out_eval, out_plain)

    torch.manual_seed(5)
    out_train, w_train = scaled_dot_product_attention(q, k, v, dropout=0.5, training=True)
    torch.manual_seed(5)
    keep = torch.nn.functional.dropout(torch.ones_like(w_eval), p=0.5, training=True)  # same draws: 0 or 2
    torch.testing.assert_close(w_train, w_eval)  # the returned map is before dropout
    torch.testing.assert_close(out_train, (w_eval * keep) @ v)
    assert not torch.allclose(out_train, out_eval)


@pytest.mark.ex2
@pytest.mark.parametrize("D,h", [(64, 4), (128, 8), (256, 12)])
def test_full_width_parameter_count(D, h):
    attn = MultiHeadSelfAttention(D, h)
    n = sum(p.numel() for p in attn.parameters())
    assert n == 3 * (D * h * D + h * D) + h * D * D + D


@pytest.mark.parametrize("head_dim", [None, 16])
def test_init_is_glorot_uniform_with_keras_fans(head_dim):
    torch.manual_seed(6)
    D, h = 64, 4
    attn = MultiHeadSelfAttention(D, h, head_dim=head_dim)
    d = attn.head_dim
    bounds = {"q_proj": math.sqrt(6 / (h * D + d * D)), "k_proj": math.sqrt(6 / (h * D + d * D)),
              "v_proj": math.sqrt(6 / (h * D + d * D)), "out_proj": math.sqrt(6 / (h * d + h * D))}
    for name, bound in bounds.items():
        lin = getattr(attn, name)
        w = lin.weight.abs()
        # thousands of uniform draws: the largest sits within 1% of the bound, none beyond it
        assert w.max() <= bound and w.max() > 0.99 * bound, (name, w.max().item(), bound)
        assert torch.count_nonzero(lin.bias) == 0


@pytest.mark.ex2
@pytest.mark.parametrize("head_dim", [None, 4])
def test_fused_path_matches_the_hand_written_one(head_dim):
    torch.manual_seed(5)
    B, N, D, h = 2, 9, 12, 3
    hand = MultiHeadSelfAttention(D, h, head_dim=head_dim)
    fused = MultiHeadSelfAttention(D, h, head_dim=head_dim, fused=True)
    with torch.no_grad():
        for p in hand.parameters():  # non-zero biases, copied into both
            p.normal_(0, 0.5)
        fused.load_state_dict(hand.state_dict())
    x1 = torch.randn(B, N, D, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    out1, out2 = hand(x1), fused(x2)
    torch.testing.assert_close(out2, out1, rtol=1e-5, atol=1e-5)
    g = torch.randn(B, N, D)
    (out1 * g).sum().backward()
    (out2 * g).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    for (name, p1), p2 in zip(hand.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-5, atol=1e-5, msg=name)
    # The float64 reference checks the fused path on its own, not only against the hand-written one.
    ref_out, ref_w = _reference_mhsa(x1.detach().double(), hand.double())
    torch.testing.assert_close(out2.detach().double(), ref_out, rtol=1e-5, atol=1e-5)
    # Weights asked for: the hand-written path runs and returns the same output and the row-stochastic map.
    out3, w3 = fused.double()(x1.detach().double(), return_weights=True)
    torch.testing.assert_close(out3, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w3, ref_w, rtol=1e-10, atol=1e-12)


@pytest.mark.ex2
def test_fused_path_really_calls_torch_kernel(monkeypatch):
    import torch.nn.functional as F

    calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(1, 4, 8)
    MultiHeadSelfAttention(8, 2)(x)
    assert calls == []
    MultiHeadSelfAttention(8, 2, fused=True).eval()(x)
    assert calls == [1]
    MultiHeadSelfAttention(8, 2, fused=True)(x, return_weights=True)
    assert calls == [1]
