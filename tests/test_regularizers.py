"""The optimiser config's regularisers (circuits/train.py): decay towards the initial weights,
gradient (update) noise and weight noise. Off by default, where the step must stay a plain AdamW step."""
import pytest
import torch
import torch.nn.functional as F

from circuits.config import Config, OptimConfig, resolve
from circuits.errors import CircuitsError
from circuits.experiment import build
from circuits.stack import stack_key
from circuits.store import load_torch, save_torch
from circuits.train import Phase, decay_towards, train


def _run(cfg, seed=0, train_seed=None, **kw):
    model, data = build(cfg, seed=seed, device="cpu")
    res = train(model, data, cfg.optim, cfg.train, seed=seed if train_seed is None else train_seed, **kw)
    return res, model


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


def test_default_step_is_a_plain_adamw_loop(tiny_cfg):
    """The default path, bit for bit: full-batch AdamW (torch's fused kernel, which the trainer uses:
    the same update as the default one to float rounding, tests/test_train.py) with linear warm-up and
    a float64 loss."""
    res, model = _run(tiny_cfg)
    ref, data = build(tiny_cfg, seed=0, device="cpu")
    o = tiny_cfg.optim
    opt = torch.optim.AdamW(ref.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, fused=True)
    x, y = data.tokens[data.train_idx], data.labels[data.train_idx]
    for step in range(tiny_cfg.train.steps):
        opt.param_groups[0]["lr"] = o.lr * min(step / o.warmup, 1.0)
        loss = F.cross_entropy(ref(x).double(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_decay_to_init_pulls_towards_the_initial_weights(tiny_cfg):
    init, _ = build(tiny_cfg, seed=0, device="cpu")
    tiny_cfg.train.eval_every = 1
    away = [Phase(30, weight_decay=0.0)]                 # Adam alone moves the weights off their init
    snap = away + [Phase(1)]                             # then one step with lr * wd = 1: onto the decay target
    outs = {}
    for to_init in (False, True):
        tiny_cfg.optim = OptimConfig(lr=0.01, weight_decay=100.0, warmup=0, decay_to_init=to_init)
        outs[to_init] = [_run(tiny_cfg, phases=ph)[1] for ph in (away, snap)]
    moved = max((a - p0).abs().max() for p0, a in zip(init.parameters(), outs[True][0].parameters()))
    assert moved > 0.1
    # after the snap the weights are the target plus one Adam step (at most a few lr)
    for p0, a, b in zip(init.parameters(), outs[True][1].parameters(), outs[False][1].parameters()):
        assert (a - p0).abs().max() <= 3 * 0.01
        assert b.abs().max() <= 3 * 0.01


def test_decay_towards_formula():
    p, p0 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0])
    decay_towards([p], [p0], 0.25)
    assert torch.equal(p, torch.tensor([0.875, -1.5]))


@pytest.mark.parametrize("option", ["grad_noise", "weight_noise"])
def test_noise_changes_the_run_and_is_reproducible_from_the_seed(tiny_cfg, option):
    plain, _ = _run(tiny_cfg)
    setattr(tiny_cfg.optim, option, 0.01)
    a, ma = _run(tiny_cfg)
    b, mb = _run(tiny_cfg)
    other, _ = _run(tiny_cfg, train_seed=1)          # same initial weights, another noise seed
    assert _strip(a.history) == _strip(b.history)
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))
    assert _strip(a.history)[-1] != _strip(plain.history)[-1]
    assert _strip(a.history)[-1] != _strip(other.history)[-1]


def _minibatches(cfg, monkeypatch) -> list[torch.Tensor]:
    seen, orig = [], torch.randperm

    def spy(n, generator=None, **kw):
        out = orig(n, generator=generator, **kw)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(torch, "randperm", spy)
    _run(cfg)
    monkeypatch.setattr(torch, "randperm", orig)
    return seen


def test_noise_keeps_the_minibatch_order(tiny_cfg, monkeypatch):
    """The noise has a generator of its own: switching it on must not reorder the minibatches."""
    tiny_cfg.optim.batch_size = 8
    plain = _minibatches(tiny_cfg, monkeypatch)
    tiny_cfg.optim.grad_noise = tiny_cfg.optim.weight_noise = 0.01
    noisy = _minibatches(tiny_cfg, monkeypatch)
    assert len(plain) == len(noisy) >= tiny_cfg.train.steps      # the split, then one per step
    assert all(torch.equal(a, b) for a, b in zip(plain, noisy))


def test_resume_with_regularisers_equals_unbroken_run(tiny_cfg, tmp_path):
    tiny_cfg.optim.batch_size = 8
    tiny_cfg.optim.decay_to_init = True
    tiny_cfg.optim.grad_noise = tiny_cfg.optim.weight_noise = 0.01
    phases = [Phase(20), Phase(20, weight_decay=0.1)]
    full, _ = _run(tiny_cfg, phases=phases)
    ck = tmp_path / "ck.pt"
    killed, _ = _run(tiny_cfg, phases=phases, checkpoint=ck, stop=lambda row: row["step"] == 30)
    assert killed.status == "stopped"
    state = load_torch(ck)                            # as if the process died after the step-30 checkpoint
    assert {"noise", "theta_0"} <= set(state)
    state["result"]["status"] = "done"
    save_torch(ck, state)
    resumed, _ = _run(tiny_cfg, phases=phases, checkpoint=ck)
    assert _strip(resumed.history) == _strip(full.history)


@pytest.mark.parametrize("bad,match", [
    (["optim.decay_to_init=true", "optim.name=adam"], "decay_to_init needs optim.name adamw"),
    (["optim.grad_noise=-0.1"], "optim.grad_noise must be a finite number >= 0"),
    (["optim.weight_noise=.nan"], r"bad value for optim.weight_noise: nan \(expected a finite number\)"),
    (["optim.grad_noise=abc"], "bad value for optim.grad_noise"),
    (["optim.decay_to_init=2"], "bad value for optim.decay_to_init"),
])
def test_bad_values_are_one_clear_error(bad, match):
    with pytest.raises(CircuitsError, match=match):
        resolve("g", {"quick": {}}, "quick", overrides=bad)


@pytest.mark.parametrize("field,value", [("decay_to_init", True), ("grad_noise", 0.1), ("weight_noise", 0.1)])
def test_regularised_runs_are_not_stacked(field, value):
    cfg = Config()
    assert stack_key(cfg) is not None
    setattr(cfg.optim, field, value)
    assert stack_key(cfg) is None
