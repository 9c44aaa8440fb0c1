"""A zoo of solutions to the exercises, for tests/test_exercise_zoo.py (never copied to students).

WRONG: plausible mistakes, each with the behaviours whose checks must FAIL on it (and, for a few, a
text its message must hold, or must not, so the message points at the real mistake). RIGHT: correct
solutions written differently from the project's, each of which must pass every check, hidden ones
included. A body replaces one function; the other targets of its exercise keep the project's bodies.
"""
from typing import NamedTuple


class Body(NamedTuple):
    exercise: int
    name: str
    bodies: dict  # qualname -> source of the body, at any indentation
    fails: tuple = ()  # behaviour texts (prefixes) that must FAIL
    says: tuple = ()  # texts that must appear in the FAIL messages
    not_says: tuple = ()  # texts that must appear in no FAIL message
    passes: tuple = ()  # behaviour texts (prefixes) that must PASS: the failure is reported where it is


SDPA, MHSA = "scaled_dot_product_attention", "MultiHeadSelfAttention.forward"
PATCH, LAYER = "PatchEmbedding.forward", "TransformerBlock.forward"
COEF, GATE = "AttentionGate.coefficients", "AttentionGate.forward"

WRONG = [
    # ----- 1. scaled dot-product attention
    Body(1, "no 1/sqrt(d_k) scale", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         fails=("scores are scaled by 1/sqrt(d_k)", "output equals torch's"), says=("multiplied by 1",)),
    Body(1, "scaled by d_k instead of its square root", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         fails=("scores are scaled by 1/sqrt(d_k)",), says=("multiplied by 0.1111",)),
    Body(1, "softmax over the queries (wrong axis)", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         fails=("every row of weights is a softmax",), says=("the softmax runs over the queries",),
         not_says=("multiplied by",), passes=("returns the output (B, h, N, d_v)",)),
    Body(1, "dropout on the returned weights", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        weights = F.dropout(weights, dropout, training)
        return weights @ v, weights"""},
         fails=("dropout acts on the weights in training only",), says=("before dropout",)),
    Body(1, "dropout outside training too", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return F.dropout(weights, dropout, True) @ v, weights"""},
         fails=("dropout acts on the weights in training only",), says=("outside training",)),
    Body(1, "a bare exp without the row maximum", {SDPA: """
        e = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
        weights = e / e.sum(-1, keepdim=True)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         fails=("every row of weights is a softmax",), says=("overflows in float32",)),
    Body(1, "the values scaled instead of the scores", {SDPA: """
        d_k = q.shape[-1]
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # (B, h, N, N)
        dropped = F.dropout(weights, p=dropout, training=training)
        return dropped @ (v / math.sqrt(d_k)), weights  # scale the values instead of the scores"""},
         fails=("scores are scaled by 1/sqrt(d_k)", "output equals torch's")),
    Body(1, "scores transposed (K Q^T)", {SDPA: """
        weights = torch.softmax(k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         fails=("output equals torch's", "gradients with respect to q, k and v")),
    # ----- 2. multi-head split and merge
    Body(2, "heads split by view(B, h, N, d), without the transpose", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, h, N, d) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         fails=("Vaswani layout", "heads are independent")),
    Body(2, "heads merged without transposing back", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = self.out_proj(out.reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         fails=("the heads' outputs are concatenated in head order",),
         passes=("Vaswani layout", "full-width heads")),
    Body(2, "strided heads: view(B, N, d, h)", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, N, d, h).permute(0, 3, 1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = self.out_proj(out.permute(0, 2, 3, 1).reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         fails=("heads are independent", "Vaswani layout"), says=("expected head 1 only",)),
    Body(2, "no output projection", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = out.transpose(1, 2).reshape(B, N, h * d)
        return (out, weights) if return_weights else out"""},
         fails=("the heads' outputs are concatenated in head order",
                "gradients reach x, v_proj and out_proj"),
         passes=("Vaswani layout",)),
    Body(2, "head width hard-coded to D // h", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, D // self.n_heads
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         fails=("full-width heads",), says=("RuntimeError at attention.py:",)),
    Body(2, "dropout not passed to the attention", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         fails=("the attention gets self.dropout and self.training",)),
    # ----- 3. patch embedding
    Body(3, "patches flattened in (P, P, C) order", {PATCH: """
        B, C, H, W = x.shape
        P, g = self.patch_size, self.grid
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError("wrong size")
        patches = x.reshape(B, C, g, P, g, P).permute(0, 2, 4, 3, 5, 1).reshape(B, self.n_patches, C * P * P)
        return self.proj(patches) + self.pos_embed"""},
         fails=("equals a Conv2d", "three channels")),
    Body(3, "column-major patch order", {PATCH: """
        B, C, H, W = x.shape
        P, g = self.patch_size, self.grid
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError("wrong size")
        patches = x.reshape(B, C, g, P, g, P).permute(0, 4, 2, 1, 3, 5).reshape(B, self.n_patches, C * P * P)
        return self.proj(patches) + self.pos_embed"""},
         fails=("tokens are in row-major patch order", "equals a Conv2d")),
    Body(3, "reshape without the permute", {PATCH: """
        B, C, H, W = x.shape
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError("wrong size")
        return self.proj(x.reshape(B, self.n_patches, -1)) + self.pos_embed"""},
         fails=("tokens are in row-major patch order", "equals a Conv2d")),
    Body(3, "no position embedding", {PATCH: """
        B, C, H, W = x.shape
        P, g = self.patch_size, self.grid
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError("wrong size")
        patches = x.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5)
        return self.proj(patches.reshape(B, self.n_patches, -1))"""},
         fails=("the position embedding is added", "gradients reach proj and pos_embed")),
    Body(3, "no size check", {PATCH: """
        B, C, H, W = x.shape
        P = self.patch_size
        patches = x.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * P * P)
        return self.proj(patches) + self.pos_embed"""},
         fails=("an input that is not img_size x img_size raises ValueError",),
         says=("raised RuntimeError",)),
    Body(3, "off-by-one patch grid (stride P - 1)", {PATCH: """
        B, C, H, W = x.shape
        P = self.patch_size
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError("wrong size")
        patches = x.unfold(2, P, P - 1).unfold(3, P, P - 1)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, C * P * P)
        return self.proj(patches) + self.pos_embed"""},
         fails=("equals a Conv2d",)),
    # ----- 4. one pre-norm encoder layer
    Body(4, "dropout on the residual sum", {LAYER: """
        a = self.attn(self.norm1(x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        x = self.drop(x + a)
        x = self.drop(x + self.act(self.fc2(self.drop(self.act(self.fc1(self.norm2(x)))))))
        return (x, weights) if return_weights else x"""},
         fails=("self.drop acts after each GELU of the MLP",), says=("use self.drop",),
         passes=("the whole layer", "pre-norm")),
    Body(4, "one dropout in the MLP instead of two", {LAYER: """
        a = self.attn(self.norm1(x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        x = x + a
        x = x + self.drop(self.act(self.fc2(self.act(self.fc1(self.norm2(x))))))
        return (x, weights) if return_weights else x"""},
         fails=("self.drop acts after each GELU of the MLP",)),
    Body(4, "post-norm (Fig. 2.3) instead of pre-norm", {LAYER: """
        a = self.attn(x, return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        x = self.norm1(x + a)
        x = self.norm2(x + self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(x)))))))
        return (x, weights) if return_weights else x"""},
         fails=("pre-norm: the attention reads LayerNorm1(x)", "the whole layer")),
    Body(4, "the MLP reads the layer's input, not the sum", {LAYER: """
        a = self.attn(self.norm1(x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        m = self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(self.norm2(x)))))))
        x = x + a + m
        return (x, weights) if return_weights else x"""},
         fails=("the whole layer",)),
    Body(4, "no GELU after fc2 (Eq. 2.2's form)", {LAYER: """
        a = self.attn(self.norm1(x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        x = x + a
        x = x + self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm2(x))))))
        return (x, weights) if return_weights else x"""},
         fails=("MLP branch", "the whole layer")),
    # ----- 5. UNETR-2D skips
    Body(5, "tokens_to_image reshaped without moving D (transposed reshape)", {"tokens_to_image": """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        B, N, D = z.shape
        return z.reshape(B, D, gh, gw)"""},
         fails=("tokens_to_image puts token n",), passes=("vit_skip at level l",)),
    Body(5, "tokens_to_image with the grid axes swapped", {"tokens_to_image": """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        B, N, D = z.shape
        return z.reshape(B, gw, gh, D).permute(0, 3, 2, 1)"""},
         fails=("tokens_to_image puts token n",), says=("token 1 on a 3x3 grid",)),
    Body(5, "skip tap off by one (hidden[S_m * l])", {"ViTSide.vit_skip": """
        if level == 0:
            return self.skips[0](x)
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1]], self.grid)
        return self.skips[level](z)"""},
         fails=("vit_skip at level l feeds hidden state S_m * l",), says=("read layer 2 (hidden[1])",)),
    Body(5, "skip tap ignoring S_m (hidden[l - 1])", {"ViTSide.vit_skip": """
        if level == 0:
            return self.skips[0](x)
        return self.skips[level](vit.tokens_to_image(hidden[level - 1], self.grid))"""},
         fails=("vit_skip at level l feeds hidden state S_m * l",), says=("S_m = 3, level 1 read layer 1",)),
    Body(5, "level 0 from the first hidden state", {"ViTSide.vit_skip": """
        if level == 0:
            return self.skips[0](vit.tokens_to_image(hidden[0], self.grid))
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1] - 1], self.grid)
        return self.skips[level](z)"""},
         fails=("vit_skip at level 0",)),
    Body(5, "blue block that skips its BatchNorm", {"BlueBlock.forward": """
        x = self.up(x)
        return self.conv.act(self.conv.conv(x))"""},
         fails=("a blue block with BatchNorm",),
         passes=("vit_skip at level l", "vit_skip at level 0", "a blue block without BatchNorm")),
    # ----- 6. attention gate
    Body(6, "no ReLU before psi", {COEF: """
        g = self.skip_norm(self.skip_proj(skip))
        u = self.up_norm(self.up_proj(up))
        return torch.sigmoid(self.psi_norm(self.psi(g + u)))"""},
         fails=("alpha = sigmoid(psi(ReLU", "with batch_norm")),
    Body(6, "one norm after the sum", {COEF: """
        s = self.skip_norm(self.skip_proj(skip) + self.up_proj(up))
        return torch.sigmoid(self.psi_norm(self.psi(torch.relu(s))))"""},
         fails=("with batch_norm, a BatchNorm follows each 1x1 conv",)),
    Body(6, "no sigmoid", {COEF: """
        g = self.skip_norm(self.skip_proj(skip))
        u = self.up_norm(self.up_proj(up))
        return self.psi_norm(self.psi(torch.relu(g + u)))"""},
         fails=("alpha = sigmoid(psi(ReLU",)),
    Body(6, "modes swapped", {GATE: """
        alpha = self.coefficients(skip, up)
        return (skip if self.mode == "up" else up) * alpha"""},
         fails=("mode 'up' rescales", "mode 'skip' rescales")),
    Body(6, "psi's BatchNorm skipped", {COEF: """
        g = self.skip_norm(self.skip_proj(skip))
        u = self.up_norm(self.up_proj(up))
        return torch.sigmoid(self.psi(torch.relu(g + u)))"""},
         fails=("with batch_norm, a BatchNorm follows each 1x1 conv",)),
    # ----- 7. mirror padding
    Body(7, "'reflect' instead of 'symmetric' padding", {"pad_to_multiple": """
        pad = [(0, 0)] * (image.ndim - 2) + [padding_for(n, multiple) for n in image.shape[-2:]]
        return np.pad(image, pad, mode="reflect")"""},
         fails=("pad_to_multiple mirrors with the edge pixel repeated",)),
    Body(7, "the odd pixel after", {"padding_for": """
        total = -size % multiple
        return total // 2, (total + 1) // 2"""},
         fails=("padding_for",), says=("padding_for(1463, 256) = (36, 37)",)),
    Body(7, "a whole multiple of padding when none is needed", {"padding_for": """
        total = multiple - size % multiple
        return (total + 1) // 2, total // 2"""},
         fails=("padding_for", "a slice whose sides are already multiples")),
    Body(7, "leading axes padded too", {"pad_to_multiple": """
        return np.pad(image, [padding_for(n, multiple) for n in image.shape], mode="symmetric")"""},
         fails=("leading axes and dtype are kept",)),
    # ----- 8. overlap-tile layout
    Body(8, "ceil(size / keep) windows: more padding than needed", {"_axis_layout": """
        margin = (window - keep) // 2
        n = max(1, -(-size // keep))
        pad = n * keep + 2 * margin - size
        pad_before = pad - pad // 2
        spans = []
        for k in range(n):
            start = 0 if k == 0 else margin + k * keep - pad_before
            end = size if k == n - 1 else margin + (k + 1) * keep - pad_before
            spans.append((k * keep, start, end))
        return (pad_before, pad // 2), spans"""},
         fails=("Fig. 4.3: otherwise the least padding",)),
    Body(8, "the odd padding pixel at the bottom", {"_axis_layout": """
        margin = (window - keep) // 2
        n = max(1, size // keep)
        if n * keep + 2 * margin < size:
            n += 1
        pad = n * keep + 2 * margin - size
        pad_before = pad // 2
        spans = []
        for k in range(n):
            start = 0 if k == 0 else margin + k * keep - pad_before
            end = size if k == n - 1 else margin + (k + 1) * keep - pad_before
            spans.append((k * keep, start, end))
        return (pad_before, pad - pad_before), spans"""},
         fails=("the odd padding pixel goes on top / left",)),
    Body(8, "border patches not grown to the image border", {"_axis_layout": """
        margin = (window - keep) // 2
        n = max(1, size // keep)
        if n * keep + 2 * margin < size:
            n += 1
        pad = n * keep + 2 * margin - size
        pad_before = pad - pad // 2
        starts = [margin + k * keep - pad_before for k in range(n)]
        spans = [(k * keep, max(0, start), min(size, start + keep)) for k, start in enumerate(starts)]
        return (pad_before, pad // 2), spans"""},
         fails=("every pixel is kept from exactly one window",)),
    # ----- 9. IoU_F and Dice
    Body(9, "1.0 whenever TP + FP == 0 (the missed slice scores perfectly)", {
        "iou_from_counts": "return 1.0 if tp + fp == 0 else tp / (tp + fp + fn)",
        "dice_from_counts": "return 1.0 if tp + fp == 0 else 2 * tp / (2 * tp + fp + fn)"},
         fails=("a slice whose mitochondria are all missed",), says=("(0, 0, 7)",),
         passes=("IoU_F = TP / (TP + FP + FN) and Dice", "an empty prediction of an empty mask")),
    Body(9, "IoU with the true negatives", {"iou_foreground": """
        pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
        return float((pred & mask).sum() / ((pred | mask).sum() + (~pred & ~mask).sum()))"""},
         fails=("true negatives do not count", "on hand-drawn masks")),
    Body(9, "Dice written as IoU", {
        "dice_from_counts": "return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)"},
         fails=("IoU_F = TP / (TP + FP + FN) and Dice", "Dice = 2 IoU_F / (1 + IoU_F)")),
    Body(9, "integer division", {
        "iou_from_counts": "return 1.0 if tp + fp + fn == 0 else tp // (tp + fp + fn)"},
         fails=("IoU_F = TP / (TP + FP + FN) and Dice", "on hand-drawn masks")),
    Body(9, "an empty prediction of an empty mask scores 0", {
        "iou_from_counts": "return 0.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)"},
         fails=("an empty prediction of an empty mask scores 1",)),
    Body(9, "0/255 masks multiplied as numbers", {"iou_foreground": """
        pred, mask = np.asarray(pred), np.asarray(mask)
        tp = int((pred * mask).sum())
        return iou_from_counts(tp, int(pred.sum()) - tp, int(mask.sum()) - tp)"""},
         fails=("masks stored as 0 / 255",)),
    # ----- 10. two pretext degradations
    Body(10, "sigma 0.15 on a 0-255 image", {"gaussian_noise": """
        return _to_uint8(image + rng.normal(0.0, 0.15, image.shape))"""},
         fails=("gaussian_noise: per-pixel N(0, 0.15 * 255)",), says=("expected 0.15 * 255 = 38.25",)),
    Body(10, "astype(np.uint8) wraps around", {"gaussian_noise": """
        return np.rint(image + rng.normal(0.0, sigma, image.shape)).astype(np.uint8)"""},
         fails=("gaussian_noise: clips to [0, 255]",)),
    Body(10, "truncation instead of rounding", {"gaussian_noise": """
        return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)"""},
         fails=("gaussian_noise: per-pixel N(0, 0.15 * 255)",), says=("round, do not truncate",)),
    Body(10, "n_max left out (rng.integers(n_min, n_max))", {"cutout": """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        out = image.copy()
        for _ in range(rng.integers(n_min, n_max)):
            cy, cx = rng.random(2)
            top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
            out[max(top, 0):top + h, max(left, 0):left + w] = fill
        return out"""},
         fails=("cutout: 1 to 5 boxes",)),
    Body(10, "boxes int(size * H) instead of rounded", {"cutout": """
        H, W = image.shape
        h, w = max(1, int(size * H)), max(1, int(size * W))
        out = image.copy()
        for _ in range(rng.integers(n_min, n_max + 1)):
            cy, cx = rng.random(2)
            top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
            out[max(top, 0):top + h, max(left, 0):left + w] = fill
        return out"""},
         fails=("cutout: one box is round(0.2 H) x round(0.2 W)",)),
    Body(10, "boxes kept inside the image", {"cutout": """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        out = image.copy()
        for _ in range(rng.integers(n_min, n_max + 1)):
            top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
            out[top:top + h, left:left + w] = fill
        return out"""},
         fails=("cutout: one box is round(0.2 H) x round(0.2 W)",), says=("cut off by the border",)),
    Body(10, "cutout changes its input", {"cutout": """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        for _ in range(rng.integers(n_min, n_max + 1)):
            cy, cx = rng.random(2)
            top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
            image[max(top, 0):top + h, max(left, 0):left + w] = fill
        return image"""},
         fails=("gaussian_noise and cutout are pure",)),
]


def match_body(zero_count, keep_zero="fix_zero_peak and counts[0] > 0", pin_zero=True):
    """match_histogram with `zero_count` as the fix's new count of 0 (an expression of counts)."""
    return f"""
        counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
        keep_zero = {keep_zero}
        if keep_zero:
            counts[0] = {zero_count}
        source_cdf = np.cumsum(counts) / counts.sum()
        target = np.asarray(target_hist, dtype=np.float64)
        levels = np.nonzero(target)[0]
        lut = np.interp(source_cdf, np.cumsum(target[levels]) / target.sum(), levels)
        if keep_zero and {pin_zero}:
            lut[0] = 0.0
        return _to_uint8(lut)[image]"""


def loss_body(ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).mean()",
              ynet_pretext="F.mse_loss(rec, y)", bce="F.binary_cross_entropy_with_logits(output, y)",
              segmentation='bce + dice_loss(output, y) if loss == "bce_dice" else bce'):
    """compute_loss with one of its expressions replaced."""
    return f"""
        if isinstance(output, tuple):
            seg, rec = output
            if pretext:
                return {ynet_pretext}
            labelled = (y.flatten(1)[:, 0] >= 0).to(seg.dtype)
            bce = F.binary_cross_entropy_with_logits(seg, y.clamp(min=0), reduction="none")
            bce = bce.mean(dim=(1, 2, 3))
            return {ynet}
        if pretext:
            return F.mse_loss(torch.sigmoid(output), y)
        bce = {bce}
        return {segmentation}"""


RULE = "(max(0.0, 2 * counts[1] - counts[2]) if counts[1] > 0 and counts[2] > 0 " \
       "else float(not counts[1:].any()))"
WRONG += [
    # ----- 11. histogram matching
    Body(11, "the line reversed (2 c2 - c1)", {"match_histogram": match_body(RULE.replace(
        "2 * counts[1] - counts[2]", "2 * counts[2] - counts[1]"))},
         fails=("fix_zero_peak on a dark slice with 0, 1 and 2",), says=("grey levels",),
         passes=("matching an image to its own histogram", "fix_zero_peak: zero padding stays 0")),
    Body(11, "count(0) := count(1)", {"match_histogram": match_body(RULE.replace(
        "max(0.0, 2 * counts[1] - counts[2])", "counts[1]"))},
         fails=("fix_zero_peak on a dark slice with 0, 1 and 2",)),
    Body(11, "count(0) := 0 always", {"match_histogram": match_body("0.0 if counts[1:].any() else 1.0")},
         fails=("fix_zero_peak on a dark slice with 0, 1 and 2",)),
    Body(11, "the regression without its condition", {"match_histogram": match_body(
        "max(0.0, 2 * counts[1] - counts[2]) if counts[1:].any() else 1.0")},
         fails=("fix_zero_peak: without a 2 in the slice",)),
    Body(11, "a negative count of 0 allowed", {"match_histogram": match_body(RULE.replace(
        "max(0.0, 2 * counts[1] - counts[2])", "2 * counts[1] - counts[2]"))},
         fails=("fix_zero_peak: a line that falls below 0",)),
    Body(11, "zero padding not pinned to 0", {"match_histogram": match_body(RULE, pin_zero=False)},
         fails=("fix_zero_peak: zero padding stays 0",)),
    # ----- 12. the training losses
    Body(12, "alpha on the wrong term", {"compute_loss": loss_body(
        ynet="(1 - alpha) * F.mse_loss(rec, x) + alpha * (bce * labelled).mean()")},
         fails=("Attention Y-Net: alpha * MSE", "Attention Y-Net: alpha = 1 trains only")),
    Body(12, "unlabelled samples not masked", {"compute_loss": loss_body(
        ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * bce.mean()")},
         fails=("Attention Y-Net: an unlabelled sample",)),
    Body(12, "BCE averaged over the labelled samples only", {"compute_loss": loss_body(
        ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).sum() / labelled.sum()")},
         fails=("Attention Y-Net: an unlabelled sample",), says=("averaged over both samples",)),
    Body(12, "Y-Net pretext against x instead of the clean target", {"compute_loss": loss_body(
        ynet_pretext="F.mse_loss(rec, x)")},
         fails=("Attention Y-Net pretext",)),
    Body(12, "bce_dice ignored", {"compute_loss": loss_body(segmentation="bce")},
         fails=("bce_dice adds the Dice loss",)),
    Body(12, "a sigmoid before the BCE-with-logits", {"compute_loss": loss_body(
        bce="F.binary_cross_entropy_with_logits(torch.sigmoid(output), y)")},
         fails=("segmentation: BCE on the logits",)),
]

RIGHT = [
    Body(1, "einsum", {SDPA: """
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / q.shape[-1] ** 0.5
        weights = scores.softmax(-1)
        return torch.einsum("bhqk,bhkd->bhqd", F.dropout(weights, dropout, training), v), weights"""}),
    Body(1, "a hand-made softmax and a float32 torch.sqrt(torch.tensor(d_k))", {SDPA: """
        d_k = q.shape[-1]
        scores = torch.matmul(q, k.transpose(2, 3)) / torch.sqrt(torch.tensor(d_k))
        e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        weights = e / e.sum(dim=-1, keepdim=True)
        keep = torch.rand_like(weights) >= dropout
        dropped = weights * keep / (1 - dropout) if training and dropout else weights
        return dropped @ v, weights"""}),
    Body(2, "a loop over heads, concatenated", {MHSA: """
        h, d = self.n_heads, self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        heads = [t.unflatten(-1, (h, d)).permute(0, 2, 1, 3) for t in (q, k, v)]
        out, weights = scaled_dot_product_attention(*heads, dropout=self.dropout, training=self.training)
        out = torch.cat([out[:, i] for i in range(h)], dim=-1)
        out = self.out_proj(out)
        return (out, weights) if return_weights else out"""}),
    Body(3, "unfold", {PATCH: """
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected {self.img_size}x{self.img_size}, got {tuple(x.shape[-2:])}")
        P = self.patch_size
        patches = x.unfold(2, P, P).unfold(3, P, P)
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        return self.proj(patches) + self.pos_embed"""}),
    Body(3, "a strided convolution with proj's weight", {PATCH: """
        import torch.nn.functional as F
        B, C, H, W = x.shape
        if H != self.img_size or W != self.img_size:
            raise ValueError("the patch embedding takes img_size x img_size inputs")
        P = self.patch_size
        weight = self.proj.weight.view(-1, C, P, P)
        return F.conv2d(x, weight, self.proj.bias, stride=P).flatten(2).transpose(1, 2) + self.pos_embed"""}),
    Body(4, "named residual branches with F.gelu", {LAYER: """
        import torch.nn.functional as F

        def mlp(t):
            return self.drop(F.gelu(self.fc2(self.drop(F.gelu(self.fc1(t))))))
        out = self.attn(self.norm1(x), return_weights=True)
        y = x + out[0]
        y = y + mlp(self.norm2(y))
        return (y, out[1]) if return_weights else y"""}),
    Body(5, "transpose then unflatten; an explicit tap index", {
        "tokens_to_image": """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        return z.transpose(1, 2).unflatten(2, (gh, gw))""",
        "ViTSide.vit_skip": """
        if not level:
            return self.skips[0](x)
        tap = self.config.skip_step * level
        return self.skips[level](vit.tokens_to_image(hidden[tap - 1], self.grid))""",
        "BlueBlock.forward": "return self.conv(self.up(x))"}),
    Body(6, "functional convolutions and clamp", {COEF: """
        import torch.nn.functional as F
        g = self.skip_norm(F.conv2d(skip, self.skip_proj.weight, self.skip_proj.bias))
        u = self.up_norm(F.conv2d(up, self.up_proj.weight, self.up_proj.bias))
        return 1 / (1 + torch.exp(-self.psi_norm(self.psi((g + u).clamp(min=0)))))""",
        GATE: "return self.coefficients(skip, up) * {'up': up, 'skip': skip}[self.mode]"}),
    Body(7, "index arithmetic instead of np.pad", {
        "padding_for": """
        total = (multiple - size % multiple) % multiple
        return total - total // 2, total // 2""",
        "pad_to_multiple": """
        out = image
        for axis in (-2, -1):  # d c b a | a b c d has period 2n
            n = out.shape[axis]
            before, after = padding_for(n, multiple)
            index = np.mod(np.arange(-before, n + after), 2 * n)
            out = np.take(out, np.where(index >= n, 2 * n - 1 - index, index), axis=axis)
        return out"""}),
    Body(9, "counts of set sizes; Dice from IoU", {
        "iou_from_counts": "return float(tp / (tp + fp + fn)) if tp + fp + fn else 1.0",
        "dice_from_counts": """
        iou = iou_from_counts(tp, fp, fn)
        return float(2 * iou / (1 + iou))""",
        "iou_foreground": """
        pred, mask = np.asarray(pred) != 0, np.asarray(mask) != 0
        union = np.count_nonzero(pred | mask)
        return np.count_nonzero(pred & mask) / union if union else 1.0""",
        "dice_coefficient": """
        pred, mask = np.asarray(pred) != 0, np.asarray(mask) != 0
        total = np.count_nonzero(pred) + np.count_nonzero(mask)
        return 2 * np.count_nonzero(pred & mask) / total if total else 1.0"""}),
    Body(10, "standard normals scaled; boxes from clipped corners", {
        "gaussian_noise": """
        noisy = image.astype(np.float64) + sigma * rng.standard_normal(image.shape)
        return np.rint(noisy).clip(0, 255).astype(np.uint8)""",
        "cutout": """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        out = np.array(image)
        n = rng.integers(n_min, n_max, endpoint=True)
        for cy, cx in rng.random((n, 2)) if n else []:
            top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
            out[np.clip(top, 0, H):np.clip(top + h, 0, H), np.clip(left, 0, W):np.clip(left + w, 0, W)] = fill
        return out"""}),
    Body(11, "a lookup table by searchsorted-free loops", {"match_histogram": """
        counts = [0.0] * 256
        for value, count in zip(*np.unique(image, return_counts=True)):
            counts[int(value)] = float(count)
        pinned = fix_zero_peak and counts[0] > 0
        if pinned:
            if counts[1] and counts[2]:
                counts[0] = max(0.0, 2 * counts[1] - counts[2])
            else:
                counts[0] = 0.0 if any(counts[1:]) else 1.0
        total, running, source_cdf = sum(counts), 0.0, []
        for c in counts:
            running += c
            source_cdf.append(running / total)
        target = np.asarray(target_hist, dtype=np.float64)
        levels = np.flatnonzero(target)
        lut = np.interp(source_cdf, np.cumsum(target[levels]) / target.sum(), levels)
        lut = np.clip(np.round(lut), 0, 255).astype(np.uint8)
        if pinned:
            lut[0] = 0
        return lut[image]"""}),
    Body(12, "log-sigmoid BCE written out", {"compute_loss": """
        def bce(z, t):  # per sample, from log sigmoid
            terms = -(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z))
            return terms.flatten(1).mean(1)
        if type(output) is tuple:
            seg, rec = output
            if pretext:
                return ((rec - y) ** 2).mean()
            labelled = (y.flatten(1)[:, :1] >= 0).flatten().to(seg.dtype)
            segmentation = (bce(seg, y.clamp(min=0)) * labelled).mean()
            return alpha * ((rec - x) ** 2).mean() + (1 - alpha) * segmentation
        if pretext:
            return ((torch.sigmoid(output) - y) ** 2).mean()
        loss_value = bce(output, y).mean()
        return loss_value + dice_loss(output, y) if loss == "bce_dice" else loss_value"""}),
]
