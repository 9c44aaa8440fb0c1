"""The zoo, exercises 1-6 (the ViT and the gate): plausible wrong bodies, by family, and correct bodies
written differently from the project's. Families: a parameter checked at one value, one mode only, one
precision or range only, square shapes and friendly values, stochastic functions judged on few draws."""
from exercise_kit import Body

SDPA, MHSA = "scaled_dot_product_attention", "MultiHeadSelfAttention.forward"
PATCH, LAYER = "PatchEmbedding.forward", "TransformerBlock.forward"
COEF, GATE = "AttentionGate.coefficients", "AttentionGate.forward"
FOLD, SKIP, BLUE = "tokens_to_image", "ViTSide.vit_skip", "BlueBlock.forward"


def sdpa(scores="q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])", axis=-1,
         dropped="F.dropout(weights, dropout, training)", out="dropped @ v"):
    """scaled_dot_product_attention with one of its expressions replaced."""
    return f"""
        scores = {scores}
        weights = torch.softmax(scores, dim={axis})
        dropped = {dropped}
        return {out}, weights"""


def mhsa(split="p(x).view(B, N, h, d).transpose(1, 2)", call="scaled_dot_product_attention(q, k, v, "
         "self.dropout, self.training)", merge="out.transpose(1, 2).reshape(B, N, h * d)", after="out"):
    """MultiHeadSelfAttention.forward with one of its steps replaced."""
    return f"""
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = ({split} for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = {call}
        out = self.out_proj({merge})
        out = {after}
        return (out, weights) if return_weights else out"""


ROW_MAJOR = "x.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B, self.n_patches, C * P * P)"


def patch(check="(H, W) != (self.img_size, self.img_size)", tokens=ROW_MAJOR,
          out="self.proj(patches) + self.pos_embed"):
    return f"""
        B, C, H, W = x.shape
        P, g = self.patch_size, self.grid
        if {check}:
            raise ValueError("the patch embedding takes img_size x img_size inputs")
        patches = {tokens}
        return {out}"""


def layer(attn="self.attn(self.norm1(x), return_weights=return_weights)", residual1="x = x + a",
          mlp="self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(self.norm2(x)))))))",
          residual2="x = x + m"):
    return f"""
        import torch.nn.functional as F
        a = {attn}
        a, weights = a if return_weights else (a, None)
        {residual1}
        m = {mlp}
        {residual2}
        return (x, weights) if return_weights else x"""


def gate(skip="self.skip_norm(self.skip_proj(skip))", up="self.up_norm(self.up_proj(up))",
         alpha="torch.sigmoid(self.psi_norm(self.psi(torch.relu(g + u))))"):
    return f"""
        g = {skip}
        u = {up}
        return {alpha}"""


WRONG = [
    # ----- 1. scaled dot-product attention
    Body(1, "no 1/sqrt(d_k) scale", {SDPA: sdpa(scores="q @ k.transpose(-2, -1)")},
         family="logic", fails=("output and weights equal Eq. 2.1",), where=("d=4, d_v=3",),
         says=("multiplied by 1;",)),
    Body(1, "softmax over the queries (wrong axis)", {SDPA: sdpa(axis=-2)},
         family="logic", fails=("output and weights equal Eq. 2.1",), where=("B=2, h=3, N=5",),
         says=("the softmax runs over the queries",)),
    Body(1, "dropout on the returned weights", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        weights = F.dropout(weights, dropout, training)
        return weights @ v, weights"""},
         family="mode", fails=("dropout in training",), where=("training, p=0.1",),
         says=("before dropout",)),
    Body(1, "dropout outside training too", {SDPA: sdpa(dropped="F.dropout(weights, dropout, True)")},
         family="mode", fails=("no dropout outside training",), where=("eval, p=0.1",)),
    Body(1, "a bare exp without the row maximum", {SDPA: """
        e = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
        weights = e / e.sum(-1, keepdim=True)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         family="precision", fails=("the weights stay a finite softmax",),
         where=("scores up to thousands",), says=("NaN or inf",)),
    Body(1, "the values scaled instead of the scores", {SDPA: """
        d_k = q.shape[-1]
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # (B, h, N, N)
        dropped = F.dropout(weights, p=dropout, training=training)
        return dropped @ (v / math.sqrt(d_k)), weights  # scale the values instead of the scores"""},
         family="logic", fails=("output and weights equal Eq. 2.1", "gradients with respect to q, k and v"),
         where=("d=4, d_v=3",), says=("multiplied by 1;",)),
    Body(1, "keep with probability p and scale by 1/p (the same as 1 - p at p = 0.5)", {SDPA: sdpa(
        dropped="weights * (torch.rand_like(weights) < dropout) / dropout if training and dropout "
                "else weights")},
         family="value", fails=("dropout in training",), where=("training, p=0.1",), says=("kept weights",)),
    Body(1, "scaled by sqrt(d_v), the values' width",
         {SDPA: sdpa(scores="q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])")},
         family="shape", fails=("output and weights equal Eq. 2.1",), where=("d=4, d_v=3",),
         says=("multiplied by 0.5774",)),
    Body(1, "computed in float32 whatever the inputs", {SDPA: """
        q, k, v = q.float(), k.float(), v.float()
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return F.dropout(weights, dropout, training) @ v, weights"""},
         family="precision", fails=("output and weights equal Eq. 2.1",), where=("float64, eval",),
         says=("expected the inputs' float64",)),
    Body(1, "dropout on the values instead of the weights",
         {SDPA: sdpa(dropped="weights", out="weights @ F.dropout(v, dropout, training)")},
         family="draws", fails=("dropout in training",), where=("training, p=0.1",),
         says=("two neighbouring queries",)),
    # ----- 2. multi-head split and merge
    Body(2, "heads split by view(B, h, N, d), without the transpose",
         {MHSA: mhsa(split="p(x).view(B, h, N, d)")},
         family="logic", fails=("eval mode: the output equals the layer",),
         where=("D=12, h=3, d=4 (d = D / h)",)),
    Body(2, "heads merged without transposing back", {MHSA: mhsa(merge="out.reshape(B, N, h * d)")},
         family="logic", fails=("eval mode: the output equals the layer",), where=("D=12, h=3, d=4",)),
    Body(2, "strided heads: view(B, N, d, h)", {MHSA: mhsa(
        split="p(x).view(B, N, d, h).permute(0, 3, 1, 2)",
        merge="out.permute(0, 2, 3, 1).reshape(B, N, h * d)")},
         family="logic", fails=("eval mode: the output equals the layer",), where=("D=12, h=3, d=4",)),
    Body(2, "no output projection", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, self.head_dim
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = out.transpose(1, 2).reshape(B, N, h * d)
        return (out, weights) if return_weights else out"""},
         family="logic", fails=("eval mode: the output equals the layer",), where=("D=12, h=3, d=4",)),
    Body(2, "head width hard-coded to D // h", {MHSA: """
        B, N, D = x.shape
        h, d = self.n_heads, D // self.n_heads
        q, k, v = (p(x).view(B, N, h, d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, self.dropout, self.training)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, h * d))
        return (out, weights) if return_weights else out"""},
         family="value", fails=("eval mode: the output equals the layer",),
         where=("D=8, h=4, d=8 (full width)",),
         says=("RuntimeError at attention.py:",)),
    Body(2, "dropout not passed to the attention",
         {MHSA: mhsa(call="scaled_dot_product_attention(q, k, v)")},
         family="mode", fails=("training mode: the attention gets",), where=("training, dropout=0.1",)),
    Body(2, "a second dropout on the output",
         {MHSA: mhsa(after="F.dropout(out, self.dropout, self.training)")},
         family="mode", fails=("training mode: the attention gets",), where=("training, dropout=0.1",)),
    Body(2, "always in training mode",
         {MHSA: mhsa(call="scaled_dot_product_attention(q, k, v, self.dropout, True)")},
         family="mode", fails=("training mode: the attention gets",), where=("eval, dropout=0.1",)),
    Body(2, "merged to (B, N, D): only heads of width D / h fit", {MHSA: mhsa(
        merge="out.transpose(1, 2).reshape(B, N, D)")},
         family="value", fails=("eval mode: the output equals the layer",),
         where=("D=8, h=4, d=8 (full width)",)),
    Body(2, "projected in float32", {MHSA: mhsa(split="p(x.float()).view(B, N, h, d).transpose(1, 2)")},
         family="precision", fails=("eval mode: the output equals the layer",), where=("float64",)),
    Body(2, "the first sample's heads for the whole batch", {MHSA: mhsa(
        split="p(x)[0].view(N, h, d).transpose(0, 1).expand(B, h, N, d)")},
         family="shape", fails=("eval mode: the output equals the layer",), where=("B=2, N=5",)),
    Body(2, "return_weights ignored",
         {MHSA: mhsa().replace("return (out, weights) if return_weights else out", "return out, weights")},
         family="value", fails=("return_weights gives",), where=("without return_weights",)),
    # ----- 3. patch embedding
    Body(3, "patches flattened in (P, P, C) order", {PATCH: patch(
        tokens=ROW_MAJOR.replace("0, 2, 4, 1, 3, 5", "0, 2, 4, 3, 5, 1"))},
         family="logic", fails=("tokens equal the strided convolution",), where=("C=2",)),
    Body(3, "column-major patch order", {PATCH: patch(
        tokens=ROW_MAJOR.replace("0, 2, 4, 1, 3, 5", "0, 4, 2, 1, 3, 5"))},
         family="logic", fails=("tokens are in row-major patch order",
                                "tokens equal the strided convolution"),
         where=("img_size=8, P=4",), says=("reached token(s) [6]",)),
    Body(3, "reshape without the permute", {PATCH: patch(tokens="x.reshape(B, self.n_patches, -1)")},
         family="logic", fails=("tokens are in row-major patch order",
                                "tokens equal the strided convolution"),
         where=("img_size=8, P=4, C=2",)),
    Body(3, "no position embedding", {PATCH: patch(out="self.proj(patches)")},
         family="logic", fails=("tokens equal the strided convolution",
                                "gradients of x, proj and pos_embed"),
         where=("img_size=8, P=4, C=2, D=5, B=3",)),
    Body(3, "no size check", {PATCH: patch(check="False")},
         family="shape", fails=("an input that is not img_size x img_size raises ValueError",),
         where=("a 8x16 input",),
         says=("raised RuntimeError",)),
    Body(3, "off-by-one patch grid (stride P - 1)", {PATCH: patch(
        tokens="x.unfold(2, P, P - 1).unfold(3, P, P - 1).permute(0, 2, 3, 1, 4, 5).reshape(B, -1, C * P * P)"
               "[:, :self.n_patches]")},
         family="logic", fails=("tokens equal the strided convolution",), where=("img_size=8, P=4",)),
    Body(3, "only the width checked", {PATCH: patch(check="W != self.img_size")},
         family="shape", fails=("an input that is not img_size x img_size raises ValueError",),
         where=("a 16x8 input",)),
    Body(3, "only the pixel count checked", {PATCH: patch(check="H * W != self.img_size ** 2")},
         family="shape", fails=("an input that is not img_size x img_size raises ValueError",),
         where=("a 4x16 input",)),
    Body(3, "one channel assumed", {PATCH: patch(
        tokens="x.reshape(B, g, P, g, P * C).permute(0, 1, 3, 2, 4).reshape(B, self.n_patches, C * P * P)")},
         family="value", fails=("tokens equal the strided convolution",), where=("C=2",)),
    Body(3, "patches gathered into a float32 buffer", {PATCH: patch(
        tokens="x.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B, self.n_patches, C * P * P)"
               ".float()")},
         family="precision", fails=("tokens equal the strided convolution",), where=("float64",)),
    Body(3, "the grid taken from 16 x 16 patches", {PATCH: patch(
        tokens="x.reshape(B, C, H // 16, 16, W // 16, 16).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, "
               "C * 256)")},
         family="value", fails=("tokens equal the strided convolution",), where=("img_size=8, P=4",)),
    # ----- 4. one pre-norm encoder layer
    Body(4, "dropout on the residual sum", {LAYER: layer(
        residual1="x = self.drop(x + a)",
        mlp="self.act(self.fc2(self.drop(self.act(self.fc1(self.norm2(x))))))",
        residual2="x = self.drop(x + m)")},
         family="draws", fails=("training: self.drop acts after each GELU",),
         where=("training, dropout=0.1",),
         passes=("eval mode: y = x + MHSA",)),
    Body(4, "one dropout in the MLP instead of two", {LAYER: layer(
        mlp="self.drop(self.act(self.fc2(self.act(self.fc1(self.norm2(x))))))")},
         family="draws", fails=("training: self.drop acts after each GELU",),
         where=("training, dropout=0.1",)),
    Body(4, "post-norm (Fig. 2.3) instead of pre-norm", {LAYER: layer(
        attn="self.attn(x, return_weights=return_weights)", residual1="x = self.norm1(x + a)",
        mlp="self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(x))))))",
        residual2="x = self.norm2(x + m)")},
         family="logic", fails=("eval mode: y = x + MHSA",), where=("D=8, h=2, M=16",)),
    Body(4, "the MLP reads the layer's input, not the sum", {LAYER: """
        a = self.attn(self.norm1(x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        m = self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(self.norm2(x)))))))
        x = x + a + m
        return (x, weights) if return_weights else x"""},
         family="logic", fails=("eval mode: y = x + MHSA",), where=("D=8, h=2, M=16",)),
    Body(4, "no GELU after fc2 (Eq. 2.2's form)", {LAYER: layer(
        mlp="self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm2(x))))))")},
         family="logic", fails=("eval mode: y = x + MHSA",), where=("D=8, h=2, M=16",)),
    Body(4, "an in-place residual (x += ...)", {LAYER: layer(residual1="x += a", residual2="x += m")},
         family="mode", fails=("the input is left as it was", "gradients of x and every weight"),
         where=("D=8, h=2, M=16",)),
    Body(4, "dropout on the attention branch too", {LAYER: layer(residual1="x = x + self.drop(a)")},
         family="draws", fails=("training: self.drop acts after each GELU",),
         where=("training, dropout=0.1",)),
    Body(4, "the tanh approximation of GELU", {LAYER: layer(
        mlp="self.drop(F.gelu(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x)), approximate='tanh'))), "
            "approximate='tanh'))")},
         family="precision", fails=("eval mode: y = x + MHSA",), where=("D=8, h=2, M=16",)),
    Body(4, "LayerNorm written with eps 1e-5", {LAYER: """
        import torch.nn.functional as F

        def norm(ln, t):
            return F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, eps=1e-5)
        a = self.attn(norm(self.norm1, x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        x = x + a
        x = x + self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(norm(self.norm2, x)))))))
        return (x, weights) if return_weights else x"""},
         family="shape", fails=("eval mode: y = x + MHSA",), where=("tokens of std 0.003",)),
    Body(4, "dropout with F.dropout in training and in eval", {LAYER: layer(
        mlp="F.dropout(self.act(self.fc2(F.dropout(self.act(self.fc1(self.norm2(x))), self.drop.p))), "
            "self.drop.p)")},
         family="mode", fails=("eval mode ignores the dropout",), where=("eval, dropout=0.5",)),
    Body(4, "the weights dropped (return_weights ignored)", {LAYER: layer(
        attn="self.attn(self.norm1(x))").replace("a if return_weights else (a, None)", "(a, None)")},
         family="value", fails=("return_weights also returns",), where=("D=8, h=2, M=16",)),
    # ----- 5. UNETR-2D skips
    Body(5, "tokens_to_image reshaped without moving D", {FOLD: """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        B, N, D = z.shape
        return z.reshape(B, D, gh, gw)"""},
         family="logic", fails=("tokens_to_image puts token n",), where=("B=2, D=3, grid 3",), passes=()),
    Body(5, "tokens_to_image with the grid axes swapped", {FOLD: """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        B, N, D = z.shape
        return z.reshape(B, gw, gh, D).permute(0, 3, 2, 1)"""},
         family="logic", fails=("tokens_to_image puts token n",), where=("token 1",)),
    Body(5, "tokens_to_image for square grids only", {FOLD: """
        B, N, D = z.shape
        g = int(N ** 0.5)
        return z.reshape(B, g, N // g, D).permute(0, 3, 1, 2)"""},
         family="shape", fails=("tokens_to_image puts token n",), where=("grid (1, 5)",)),
    Body(5, "skip tap off by one (hidden[S_m * l])", {SKIP: """
        if level == 0:
            return self.skips[0](x)
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1]], self.grid)
        return self.skips[level](z)"""},
         family="logic", fails=("vit_skip at level l >= 1",),
         where=("4 layers, S_m=1, P=8, img_size=16, level 1",),
         says=("read layer 2 (hidden[1])",)),
    Body(5, "skip tap ignoring S_m (hidden[l - 1])", {SKIP: """
        if level == 0:
            return self.skips[0](x)
        return self.skips[level](vit.tokens_to_image(hidden[level - 1], self.grid))"""},
         family="value", fails=("vit_skip at level l >= 1",), where=("7 layers, S_m=3",),
         says=("read layer 1",)),
    Body(5, "level 0 from the first hidden state", {SKIP: """
        if level == 0:
            return self.skips[0](vit.tokens_to_image(hidden[0], self.grid))
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1] - 1], self.grid)
        return self.skips[level](z)"""},
         family="logic", fails=("vit_skip at level 0",), where=("level 0",)),
    Body(5, "blue block that skips its BatchNorm", {BLUE: """
        x = self.up(x)
        return self.conv.act(self.conv.conv(x))"""},
         family="logic", fails=("a blue block is a transpose conv",), where=("relu, BatchNorm on",),
         passes=("vit_skip at level l >= 1", "vit_skip at level 0")),
    Body(5, "blue block with an extra ReLU (it erases ELU's negative half)", {BLUE: """
        return torch.relu(self.conv(self.up(x)))"""},
         family="value", fails=("a blue block is a transpose conv",), where=("elu, BatchNorm off",)),
    Body(5, "blue block rebuilt without its dropout", {BLUE: """
        x = self.up(x)
        return self.conv.act(self.conv.norm(self.conv.conv(x)))"""},
         family="draws", fails=("in training a blue block's",), where=("training, dropout=0.5",),
         passes=("a blue block is a transpose conv",)),
    Body(5, "blue block's BatchNorm with the running statistics in training too", {BLUE: """
        import torch.nn.functional as F
        y = self.conv.conv(self.up(x))
        norm = self.conv.norm
        if isinstance(norm, torch.nn.BatchNorm2d):
            y = F.batch_norm(y, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0,
                             norm.eps)
        return self.conv.drop(self.conv.act(y))"""},
         family="mode", fails=("in training a blue block's",),
         where=("BatchNorm on", "training, dropout=0.0")),
    Body(5, "tokens folded in float32", {FOLD: """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        return z.float().transpose(1, 2).reshape(z.shape[0], z.shape[2], gh, gw)"""},
         family="precision", fails=("tokens_to_image puts token n",), where=("float64",)),
    # ----- 6. attention gate
    Body(6, "no ReLU before psi", {COEF: gate(alpha="torch.sigmoid(self.psi_norm(self.psi(g + u)))")},
         family="logic", fails=("coefficients: alpha = sigmoid",), where=("f=3, BatchNorm off",)),
    Body(6, "one norm after the sum", {COEF: """
        s = self.skip_norm(self.skip_proj(skip) + self.up_proj(up))
        return torch.sigmoid(self.psi_norm(self.psi(torch.relu(s))))"""},
         family="logic", fails=("coefficients: alpha = sigmoid",), where=("BatchNorm on",)),
    Body(6, "no sigmoid", {COEF: gate(alpha="self.psi_norm(self.psi(torch.relu(g + u)))")},
         family="logic", fails=("coefficients: alpha = sigmoid",), where=("f=3, BatchNorm off",)),
    Body(6, "modes swapped", {GATE: """
        alpha = self.coefficients(skip, up)
        return (skip if self.mode == "up" else up) * alpha"""},
         family="logic", fails=("forward: mode 'up' rescales",), where=("mode 'up'",)),
    Body(6, "psi's BatchNorm skipped", {COEF: gate(alpha="torch.sigmoid(self.psi(torch.relu(g + u)))")},
         family="logic", fails=("coefficients: alpha = sigmoid",), where=("BatchNorm on",)),
    Body(6, "mode 'up' only", {GATE: "return up * self.coefficients(skip, up)"},
         family="value", fails=("forward: mode 'up' rescales",), where=("mode 'skip'",)),
    Body(6, "BatchNorm in its eval form in training too", {COEF: """
        import torch.nn.functional as F

        def norm(layer, y):
            if isinstance(layer, torch.nn.BatchNorm2d):
                return F.batch_norm(y, layer.running_mean, layer.running_var, layer.weight, layer.bias, False,
                                    0.0, layer.eps)
            return y
        g = norm(self.skip_norm, self.skip_proj(skip))
        u = norm(self.up_norm, self.up_proj(up))
        return torch.sigmoid(norm(self.psi_norm, self.psi(torch.relu(g + u))))"""},
         family="mode", fails=("in training the gate's BatchNorms",), where=("training",)),
    Body(6, "coefficients detached (no gradient reaches the gate)", {GATE: """
        alpha = self.coefficients(skip, up).detach()
        return (up if self.mode == "up" else skip) * alpha"""},
         family="mode", fails=("gradients of skip, up and every weight",), where=("mode 'up'",)),
    Body(6, "one map for the whole batch (alpha averaged over the samples)", {COEF: gate(
        alpha="torch.sigmoid(self.psi_norm(self.psi(torch.relu(g + u)))).mean(0, keepdim=True)")},
         family="shape", fails=("coefficients: alpha = sigmoid",), where=("B=2",)),
    Body(6, "alpha computed in half precision", {COEF: gate(
        alpha="torch.sigmoid(self.psi_norm(self.psi(torch.relu(g + u)))).half().to(g.dtype)")},
         family="precision", fails=("coefficients: alpha = sigmoid",), where=("float64",)),
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
    Body(1, "torch's fused kernel for the output, the weights by hand", {SDPA: """
        weights = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if training else 0.0)
        return out, weights"""}),
    Body(1, "a loop over samples and heads", {SDPA: """
        outs, maps = [], []
        for b in range(q.shape[0]):
            for i in range(q.shape[1]):
                w = torch.softmax(q[b, i] @ k[b, i].T / math.sqrt(q.shape[-1]), dim=-1)
                maps.append(w)
                outs.append(F.dropout(w, dropout, training) @ v[b, i])
        shape = q.shape[:2]
        out = torch.stack(outs).view(*shape, *outs[0].shape)
        return out, torch.stack(maps).view(*shape, *maps[0].shape)"""}),
    Body(2, "a loop over heads, concatenated", {MHSA: """
        h, d = self.n_heads, self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        heads = [t.unflatten(-1, (h, d)).permute(0, 2, 1, 3) for t in (q, k, v)]
        out, weights = scaled_dot_product_attention(*heads, dropout=self.dropout, training=self.training)
        out = torch.cat([out[:, i] for i in range(h)], dim=-1)
        out = self.out_proj(out)
        return (out, weights) if return_weights else out"""}),
    Body(2, "one attention call per head, projections by einsum", {MHSA: """
        h, d = self.n_heads, self.head_dim
        def heads(lin):  # (B, h, N, d), head i from rows i*d .. (i+1)*d of the weight
            return torch.einsum("bnk,hdk->bhnd", x, lin.weight.view(h, d, -1)) + lin.bias.view(1, h, 1, d)
        q, k, v = heads(self.q_proj), heads(self.k_proj), heads(self.v_proj)
        parts = [scaled_dot_product_attention(q[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], self.dropout,
                                              self.training) for i in range(h)]
        out = torch.cat([o[:, 0] for o, _ in parts], dim=-1)
        weights = torch.cat([w for _, w in parts], dim=1)
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
    Body(3, "a loop over the patches, row by row", {PATCH: """
        P, s = self.patch_size, self.img_size
        if tuple(x.shape[2:]) != (s, s):
            raise ValueError(f"{s}x{s} inputs only")
        rows = [x[:, :, r:r + P, c:c + P].flatten(1) for r in range(0, s, P) for c in range(0, s, P)]
        return self.proj(torch.stack(rows, dim=1)) + self.pos_embed"""}),
    Body(4, "named residual branches with F.gelu", {LAYER: """
        import torch.nn.functional as F

        def mlp(t):
            return self.drop(F.gelu(self.fc2(self.drop(F.gelu(self.fc1(t))))))
        out = self.attn(self.norm1(x), return_weights=True)
        y = x + out[0]
        y = y + mlp(self.norm2(y))
        return (y, out[1]) if return_weights else y"""}),
    Body(4, "F.layer_norm and F.dropout inline instead of the modules", {LAYER: """
        import torch.nn.functional as F
        p, train = self.drop.p, self.training
        def norm(ln, t):
            return F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        a = self.attn(norm(self.norm1, x), return_weights=return_weights)
        a, weights = a if return_weights else (a, None)
        y = x + a
        hidden = F.dropout(F.gelu(F.linear(norm(self.norm2, y), self.fc1.weight, self.fc1.bias)), p, train)
        y = y + F.dropout(F.gelu(F.linear(hidden, self.fc2.weight, self.fc2.bias)), p, train)
        return (y, weights) if return_weights else y"""}),
    Body(5, "transpose then unflatten; an explicit tap index", {
        FOLD: """
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        return z.transpose(1, 2).unflatten(2, (gh, gw))""",
        SKIP: """
        if not level:
            return self.skips[0](x)
        tap = self.config.skip_step * level
        return self.skips[level](vit.tokens_to_image(hidden[tap - 1], self.grid))""",
        BLUE: "return self.conv(self.up(x))"}),
    Body(5, "the skip path's blocks run one by one", {SKIP: """
        if level == 0:
            return self.skips[0](x)
        z = vit.tokens_to_image(hidden[self.skip_layers[level - 1] - 1], self.grid)
        for block in self.skips[level]:  # the K - l blue blocks
            z = block(z)
        return z"""}),
    Body(5, "the fold inline in vit_skip, the conv block's parts inline", {
        SKIP: """
        if level == 0:
            return self.skips[0](x)
        z = hidden[self.skip_layers[level - 1] - 1]
        folded = z.permute(0, 2, 1).reshape(z.shape[0], z.shape[2], self.grid, self.grid)
        return self.skips[level](folded)""",
        BLUE: """
        block = self.conv
        return block.drop(block.act(block.norm(block.conv(self.up(x)))))"""}),
    Body(6, "functional convolutions and clamp", {COEF: """
        import torch.nn.functional as F
        g = self.skip_norm(F.conv2d(skip, self.skip_proj.weight, self.skip_proj.bias))
        u = self.up_norm(F.conv2d(up, self.up_proj.weight, self.up_proj.bias))
        return 1 / (1 + torch.exp(-self.psi_norm(self.psi((g + u).clamp(min=0)))))""",
        GATE: "return self.coefficients(skip, up) * {'up': up, 'skip': skip}[self.mode]"}),
    Body(6, "one call, the mode chosen by torch.where", {GATE: """
        alpha = self.coefficients(skip, up)
        chosen = torch.where(torch.tensor(self.mode == "up"), up, skip)
        return alpha * chosen"""}),
]
