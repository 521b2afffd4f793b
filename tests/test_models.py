import pytest
import torch
import torch.nn.functional as F

from circuits.config import ModelConfig, TaskConfig
from circuits.models import build_model, n_params
from circuits.tasks import make_dataset


def test_canonical_transformer_parameter_count():
    model = build_model(ModelConfig(), d_vocab=114, n_ctx=3)
    # W_E 114x128, W_pos 3x128, W_Q/K/V 3x4x128x32, W_O 4x32x128, W_in/W_out 2x128x512, b_in 512,
    # b_out 128, W_U 128x114
    assert n_params(model) == 14592 + 384 + 49152 + 16384 + 2 * 65536 + 512 + 128 + 14592 == 226_816


def test_canonical_init_scales():
    torch.manual_seed(0)
    m = build_model(ModelConfig(), 114, 3)
    assert abs(m.W_E.std().item() - 128**-0.5) < 0.005
    assert abs(m.W_U.std().item() - 114**-0.5) < 0.005
    assert m.blocks[0].b_in.abs().sum() == 0


def _trained_pair(cfg: ModelConfig, task: TaskConfig, steps=5):
    """The same weights, a few AdamW steps in, as a fast and a plain model."""
    data = make_dataset(task)
    torch.manual_seed(0)
    model = build_model(cfg, data.d_vocab, data.n_ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    x, y = data.tokens[data.train_idx], data.labels[data.train_idx]
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    plain = build_model(ModelConfig(**{**vars(cfg), "fast": False}), data.d_vocab, data.n_ctx)
    plain.load_state_dict(model.state_dict())
    return model, plain, data


@pytest.mark.parametrize("cfg", [
    ModelConfig(),                                      # canonical: tables + last position
    ModelConfig(layernorm=True, act="gelu"),
    ModelConfig(n_layers=2, d_model=64, d_head=16, d_mlp=128),
    ModelConfig(arch="mlp"),
    ModelConfig(arch="mlp", mlp_depth=3, d_mlp=256),
], ids=["canonical", "layernorm-gelu", "2-layer", "mlp", "mlp-3"])
@pytest.mark.parametrize("layout", ["xy=", "xy"])
def test_fast_path_gives_plain_logits(cfg, layout):
    fast, plain, data = _trained_pair(cfg, TaskConfig(p=113 if cfg.arch == "transformer" and layout == "xy=" else 31, layout=layout))
    with torch.no_grad():
        a, b = fast(data.tokens), plain(data.tokens)
    assert a.shape == (len(data.tokens), data.d_vocab)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fast_path_gives_plain_gradients():
    fast, plain, data = _trained_pair(ModelConfig(d_model=32, d_head=8, d_mlp=64), TaskConfig(p=23))
    for m in (fast, plain):
        F.cross_entropy(m(data.tokens), data.labels).backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_plain_transformer_is_causal():
    torch.manual_seed(0)
    m = build_model(ModelConfig(d_model=16, d_head=4, d_mlp=32), 14, 3)
    t = torch.tensor([[1, 2, 13], [1, 5, 13]])
    out = m.plain(t)                                  # [b, pos, d_vocab]
    torch.testing.assert_close(out[0, 0], out[1, 0])  # position 0 cannot see position 1
    assert not torch.allclose(out[0, 2], out[1, 2])


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "birnn"])
def test_recurrent_models(arch):
    cfg = ModelConfig(arch=arch, d_model=16, hidden=24, rnn_layers=2)
    m = build_model(cfg, 14, 3)
    assert m(torch.randint(0, 14, (5, 3))).shape == (5, 14)
    bidirectional = arch == "birnn"
    assert m.rnn.bidirectional == bidirectional
