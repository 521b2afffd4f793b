"""Our transformer in TransformerLens's terms, for interpretability work on a trained run.

    circuits export RUN --format transformer-lens [--seed 0]
        -> RUN/export/transformer-lens-seed0/{state_dict.safetensors, config.json}

    from circuits.export import hooked_transformer
    tl_model = hooked_transformer(circuits.load(RUN).model(0), cfg)   # needs transformer_lens

The weights already carry TransformerLens's names and shapes (W_E [d_vocab, d_model], W_Q [n_heads,
d_model, d_head], W_O [n_heads, d_head, d_model], W_in [d_model, d_mlp], W_U [d_model, d_vocab]); the
export adds TransformerLens's prefixes (embed., blocks.i.attn., ...) and the zero biases our model
does not have (b_Q, b_K, b_V, b_O, b_U). The config is a HookedTransformerConfig's fields: the same
attention scale 1/sqrt(d_head), causal mask, learned positional embedding, LayerNorm (eps 1e-5) or
none. The logits agree to 1e-5 on every input (tests/test_export.py, with the real package).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from circuits.config import Config
from circuits.errors import CircuitsError
from circuits.store import atomic_write_text

FORMATS = ("transformer-lens",)


def tl_config(cfg: Config, d_vocab: int, n_ctx: int) -> dict:
    """HookedTransformerConfig keyword arguments for our transformer."""
    m = cfg.model
    if m.arch != "transformer":
        raise CircuitsError(f"TransformerLens export is for the transformer; this run's model is {m.arch!r}")
    return {"n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads, "d_head": m.d_head,
            "d_mlp": m.d_mlp, "d_vocab": d_vocab, "d_vocab_out": d_vocab, "n_ctx": n_ctx, "act_fn": m.act,
            "normalization_type": "LN" if m.layernorm else None, "positional_embedding_type": "standard",
            "attn_only": False, "default_prepend_bos": False, "eps": 1e-5, "seed": None}


def tl_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our transformer's state dict under TransformerLens's names (zero biases where we have none)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    n_layers = len(model.blocks)
    H, d, e = sd["blocks.0.W_Q"].shape
    out = {"embed.W_E": sd["W_E"], "pos_embed.W_pos": sd["W_pos"], "unembed.W_U": sd["W_U"],
           "unembed.b_U": torch.zeros(sd["W_U"].shape[1])}
    for i in range(n_layers):
        b = f"blocks.{i}."
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            out[f"{b}attn.{name}"] = sd[b + name]
        for name in ("b_Q", "b_K", "b_V"):
            out[f"{b}attn.{name}"] = torch.zeros(H, e)
        out[f"{b}attn.b_O"] = torch.zeros(d)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            out[f"{b}mlp.{name}"] = sd[b + name]
        for ln in ("ln1", "ln2"):
            if f"{b}{ln}.weight" in sd:
                out[f"{b}{ln}.w"], out[f"{b}{ln}.b"] = sd[f"{b}{ln}.weight"], sd[f"{b}{ln}.bias"]
    if "ln_final.weight" in sd:
        out["ln_final.w"], out["ln_final.b"] = sd["ln_final.weight"], sd["ln_final.bias"]
    return out


def hooked_transformer(model: torch.nn.Module, cfg: Config, d_vocab: int, n_ctx: int):
    """A transformer_lens.HookedTransformer with our trained weights (needs the optional extra:
    pip install 'circuits[interp]')."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise CircuitsError("TransformerLens is not installed: pip install 'circuits[interp]'") from None
    tl = HookedTransformer(HookedTransformerConfig(**tl_config(cfg, d_vocab, n_ctx)))
    missing, unexpected = tl.load_state_dict(tl_state_dict(model), strict=False)
    wrong = [k for k in missing if not k.endswith(("IGNORE", "mask"))] + list(unexpected)
    if wrong:
        raise CircuitsError(f"TransformerLens export: names that do not match: {', '.join(wrong[:5])}")
    return tl.eval()


def export_run(run_dir, fmt: str = "transformer-lens", seed: int | None = None, out=None) -> Path:
    """Write a run's trained transformer (one seed) for TransformerLens; returns the folder."""
    if fmt not in FORMATS:
        raise CircuitsError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from safetensors.torch import save

    from circuits.loading import load
    from circuits.store import atomic_write_bytes
    run = load(run_dir)
    seed = run.seeds[0] if seed is None and run.seeds else seed
    config = tl_config(run.config, run.data.d_vocab, run.data.n_ctx)       # refuses a non-transformer first
    model = run.model(seed)
    folder = Path(out) if out else Path(run_dir) / "export" / f"transformer-lens-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "state_dict.safetensors",
                       save({k: v.contiguous() for k, v in tl_state_dict(model).items()}))
    atomic_write_text(folder / "config.json", json.dumps(config, indent=1))
    return folder
