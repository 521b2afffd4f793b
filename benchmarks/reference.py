"""A plain PyTorch transformer written the straightforward way (nn.Module layers, every position),
the same model as circuits.models.transformer: the reference our fast path is timed against."""
from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model, n_heads, d_head):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.q = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.k = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.v = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.o = nn.Linear(n_heads * d_head, d_model, bias=False)

    def forward(self, x):                                     # [b, pos, d_model]
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / self.d_head**0.5   # [b, h, pos, pos]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        z = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.o(z.transpose(1, 2).reshape(b, n, -1))


class ReferenceTransformer(nn.Module):
    def __init__(self, d_vocab=114, n_ctx=3, d_model=128, n_heads=4, d_head=32, d_mlp=512):
        super().__init__()
        self.embed = nn.Embedding(d_vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(n_ctx, d_model))
        self.attn = Attention(d_model, n_heads, d_head)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))
        self.unembed = nn.Linear(d_model, d_vocab, bias=False)

    def forward(self, tokens):                                # [b, pos] -> [b, d_vocab]
        x = self.embed(tokens) + self.pos
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return self.unembed(x)[:, -1]

    @torch.no_grad()
    def load_from(self, m):
        """Copy the weights of a circuits Transformer (1 layer, no LayerNorm)."""
        blk = m.blocks[0]
        self.embed.weight.copy_(m.W_E)
        self.pos.copy_(m.W_pos)
        for lin, W in ((self.attn.q, blk.W_Q), (self.attn.k, blk.W_K), (self.attn.v, blk.W_V)):
            lin.weight.copy_(W.permute(0, 2, 1).reshape(-1, W.shape[1]))   # [h, d, e] -> [h*e, d]
        self.attn.o.weight.copy_(blk.W_O.reshape(-1, blk.W_O.shape[-1]).T)  # [h, e, d] -> [d, h*e]
        self.mlp[0].weight.copy_(blk.W_in.T)
        self.mlp[0].bias.copy_(blk.b_in)
        self.mlp[2].weight.copy_(blk.W_out.T)
        self.mlp[2].bias.copy_(blk.b_out)
        self.unembed.weight.copy_(m.W_U.T)
        return self
