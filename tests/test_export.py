"""TransformerLens export: names, shapes, the CLI, and (where transformer_lens is installed) equal logits."""
import json

import pytest
import torch

import circuits
from circuits import cli as cli_module
from circuits.config import Config, ModelConfig, TaskConfig
from circuits.errors import CircuitsError
from circuits.experiment import build
from circuits.export import hooked_transformer, tl_config, tl_state_dict

SHAPES = {"1-layer": dict(d_model=32, n_heads=4, d_head=8, d_mlp=64),
          "2-layer-layernorm-gelu": dict(d_model=32, n_heads=2, d_head=16, d_mlp=48, n_layers=2, layernorm=True,
                                         act="gelu")}


def _model(kw):
    cfg = Config(task=TaskConfig(p=13, frac=0.5), model=ModelConfig(**kw))
    model, data = build(cfg, seed=0, device="cpu")
    with torch.no_grad():                       # non-zero biases and norms: a wrong mapping must show
        for name, p in model.named_parameters():
            if name.endswith(("b_in", "b_out", "bias")) or name.endswith("weight"):
                p.add_(torch.randn_like(p) * 0.3)
    return cfg, model.eval(), data


@pytest.mark.parametrize("kw", SHAPES.values(), ids=SHAPES.keys())
def test_the_state_dict_has_transformer_lens_names_and_shapes(kw):
    cfg, model, data = _model(kw)
    sd, c = tl_state_dict(model), tl_config(cfg, data.d_vocab, data.n_ctx)
    L, H, d, e = c["n_layers"], c["n_heads"], c["d_model"], c["d_head"]
    assert sd["embed.W_E"].shape == (c["d_vocab"], d) and sd["unembed.W_U"].shape == (d, c["d_vocab_out"])
    for i in range(L):
        assert sd[f"blocks.{i}.attn.W_Q"].shape == (H, d, e) and sd[f"blocks.{i}.attn.W_O"].shape == (H, e, d)
        assert sd[f"blocks.{i}.mlp.W_in"].shape == (d, c["d_mlp"])
        assert (f"blocks.{i}.ln1.w" in sd) == kw.get("layernorm", False)
    assert c["normalization_type"] == ("LN" if kw.get("layernorm") else None)


def test_only_a_transformer_is_exported():
    cfg = Config(task=TaskConfig(p=13), model=ModelConfig(arch="mlp"))
    with pytest.raises(CircuitsError, match="for the transformer"):
        tl_config(cfg, 14, 3)


@pytest.mark.parametrize("kw", SHAPES.values(), ids=SHAPES.keys())
def test_hooked_transformer_gives_our_logits_on_every_pair(kw):
    pytest.importorskip("transformer_lens")
    cfg, model, data = _model(kw)
    tl = hooked_transformer(model, cfg, data.d_vocab, data.n_ctx)
    with torch.no_grad():
        ours, theirs = model.plain(data.tokens), tl(data.tokens)           # [n, n_ctx, d_vocab]
    assert (ours - theirs).abs().max() < 1e-5
    assert (model(data.tokens) - theirs[:, -1]).abs().max() < 1e-5


def test_circuits_export_writes_a_state_dict_and_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    circuits.run("grokking", preset="quick", out=run_dir, p=11, overrides=["train.steps=20", "train.eval_every=10"])
    with pytest.raises(SystemExit) as e:
        cli_module.main(["export", str(run_dir), "--format", "transformer-lens"])
    assert e.value.code == 0, capsys.readouterr().err
    folder = run_dir / "export" / "transformer-lens-seed0"
    config = json.loads((folder / "config.json").read_text())
    assert config["d_vocab"] == 12 and config["n_ctx"] == 3
    from safetensors.torch import load_file
    sd = load_file(folder / "state_dict.safetensors")
    assert torch.equal(sd["embed.W_E"], circuits.load(run_dir).model(0).W_E)
    with pytest.raises(SystemExit) as e:
        cli_module.main(["export", str(run_dir), "--format", "onnx"])
    assert e.value.code == 2 and "--format must be one of" in capsys.readouterr().err
