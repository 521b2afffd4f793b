import torch

from circuits.experiment import build
from circuits.tasks import nested_subset
from circuits.train import Phase, train


def _run(cfg, **kw):
    model, data = build(cfg, seed=0, device="cpu")
    return train(model, data, cfg.optim, cfg.train, **kw), model, data


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


def test_same_seed_same_metrics(tiny_cfg):
    a, _, _ = _run(tiny_cfg)
    b, _, _ = _run(tiny_cfg)
    assert _strip(a.history) == _strip(b.history)
    assert [r["step"] for r in a.history] == [0, 10, 20, 30, 40]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "param_norm", "train_logit"} <= set(a.history[0])


def test_training_learns_the_training_set(tiny_cfg):
    tiny_cfg.train.steps = 150
    r, _, _ = _run(tiny_cfg)
    assert r.history[-1]["train_acc"] == 1.0 and r.history[0]["train_acc"] < 0.5


def test_warmup_first_step_changes_nothing(tiny_cfg):
    tiny_cfg.train.steps, tiny_cfg.train.eval_every = 1, 1
    r, model, data = _run(tiny_cfg)
    fresh, _ = build(tiny_cfg, seed=0, device="cpu")
    for p, q in zip(model.parameters(), fresh.parameters()):  # lr * min(0 / 10, 1) = 0 (Nanda et al.)
        assert torch.equal(p, q)


def test_stop_criterion_ends_run(tiny_cfg):
    r, _, _ = _run(tiny_cfg, stop=lambda row: row["step"] >= 20)
    assert r.status == "stopped" and r.step == 20


def test_divergence(tiny_cfg):
    r, _, _ = _run(tiny_cfg, phases=[Phase(10), Phase(30, lr=1e38)])
    assert r.status == "diverged" and r.step < 40


def _grads(model, params: dict, x, y) -> dict:
    """Gradients of the float64 mean cross-entropy on (x, y) at params."""
    model.load_state_dict(params)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x).double(), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_phases_switch_training_set_weight_decay_lr_and_warmup(tiny_cfg):
    """Each phase's subset, weight decay, lr and (with a fresh optimiser) warm-up take effect: the
    steps are checked against AdamW by hand."""
    tiny_cfg.optim.warmup, tiny_cfg.train.eval_every = 2, 1
    model, data = build(tiny_cfg, seed=0, device="cpu")
    sub = nested_subset(data.train_idx, 10, seed=0)
    snaps = {}

    def snapshot(step, total, row):
        snaps[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    lr, wd = 0.01, 0.5
    r = train(model, data, tiny_cfg.optim, tiny_cfg.train, progress=snapshot,
              phases=[Phase(2), Phase(2, train_idx=sub, weight_decay=wd, lr=lr, fresh_optimizer=True)])
    assert [row["phase"] for row in r.history] == [0, 0, 0, 1, 1] and r.step == 4
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)         # noqa: E731
    assert same(snaps[0], snaps[1]) and not same(snaps[1], snaps[2])    # warm-up: step 1 at lr 0, then moves
    assert same(snaps[2], snaps[3])                                     # the fresh optimiser warms up again

    # step 4: the phase's second AdamW step, lr_t = lr * 1/2, at the same weights as its first (so
    # Adam's bias-corrected moments are g and g^2): theta - lr_t * wd * theta - lr_t * g / (|g| + eps)
    ref, _ = build(tiny_cfg, seed=0, device="cpu")

    def expected(idx, lr_t, decay):
        g = _grads(ref, snaps[3], data.tokens[idx], data.labels[idx])
        return {k: t * (1 - lr_t * decay) - lr_t * g[k] / (g[k].abs() + 1e-8) for k, t in snaps[3].items()}

    want = expected(sub, lr / 2, wd)
    for k in want:
        torch.testing.assert_close(snaps[4][k], want[k], atol=1e-6, rtol=1e-5, msg=k)
    # wrong: the full training set, the config's weight decay, no warm-up, the config's lr
    for wrong in (expected(data.train_idx, lr / 2, wd), expected(sub, lr / 2, 1.0), expected(sub, lr, wd),
                  expected(sub, tiny_cfg.optim.lr / 2, wd)):
        assert any((snaps[4][k] - wrong[k]).abs().max() > 1e-5 for k in want)


def test_minibatch_is_deterministic(tiny_cfg):
    tiny_cfg.optim.batch_size = 8
    a, _, _ = _run(tiny_cfg)
    b, _, _ = _run(tiny_cfg)
    assert _strip(a.history) == _strip(b.history)


def test_resume_from_checkpoint_equals_unbroken_run(tiny_cfg, tmp_path):
    tiny_cfg.optim.batch_size = 8                      # the minibatch order must resume too
    phases = [Phase(20), Phase(20, weight_decay=0.1)]
    full, _, _ = _run(tiny_cfg, phases=phases)
    ck = tmp_path / "ck.pt"
    killed, _, _ = _run(tiny_cfg, phases=phases, checkpoint=ck, stop=lambda row: row["step"] == 30)
    assert killed.status == "stopped"
    # pretend the process died at step 30: the last checkpoint is from step 30; rewrite its status
    from circuits.store import load_torch, save_torch
    state = load_torch(ck)
    state["result"]["status"] = "done"
    save_torch(ck, state)
    resumed, _, _ = _run(tiny_cfg, phases=phases, checkpoint=ck)
    assert _strip(resumed.history) == _strip(full.history)


def test_fused_adamw_takes_the_same_steps_as_the_default(tiny_cfg):
    """The fused Adam(W) kernel the trainer uses is the same update as torch's default (foreach) one:
    the weights after 20 full-batch steps agree to float rounding, for AdamW and for Adam (L2)."""
    from circuits.train import make_optimizer
    for name in ("adamw", "adam"):
        tiny_cfg.optim.name = name
        weights = []
        for fused in (True, False):
            model, data = build(tiny_cfg, seed=0, device="cpu")
            opt = make_optimizer(model.parameters(), tiny_cfg.optim, weight_decay=1.0, lr=1e-2)
            assert bool(opt.param_groups[0]["fused"]) is True
            if not fused:
                opt = type(opt)(model.parameters(), lr=1e-2, betas=tiny_cfg.optim.betas, weight_decay=1.0, foreach=True)
            x, y = data.tokens[data.train_idx], data.labels[data.train_idx]
            for _ in range(20):
                loss = torch.nn.functional.cross_entropy(model(x).double(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert (weights[0] - weights[1]).abs().max() < 1e-5, name
        assert (weights[0] - torch.cat([p.detach().flatten() for p in build(tiny_cfg, seed=0, device="cpu")[0]
                                        .parameters()])).abs().max() > 1e-3            # they did move


def test_loss_dtype_float32_is_a_run_of_its_own_and_close_to_float64(tiny_cfg):
    """train.loss_dtype float32 trains (near the float64 default early on) and has its own
    checkpoint fingerprint, so neither resumes the other's checkpoint."""
    from dataclasses import replace

    from circuits.train import checkpoint_fingerprint
    r64, model, data = _run(tiny_cfg)
    cfg32 = replace(tiny_cfg, train=replace(tiny_cfg.train, loss_dtype="float32"))
    r32, _, _ = _run(cfg32)
    assert r32.history[-1]["train_loss"] < r32.history[0]["train_loss"]
    assert abs(r32.history[1]["train_loss"] - r64.history[1]["train_loss"]) < 1e-3
    fp = [checkpoint_fingerprint(model, data, tiny_cfg.optim, c.train, [Phase(40)], 0) for c in (tiny_cfg, cfg32)]
    assert fp[0] != fp[1]


def test_model_dtype_float64_starts_from_the_float32_init_and_trains_close_to_it(tiny_cfg):
    """model.dtype float64: every parameter float64, the same initial weights as float32 (cast after
    the float32 init), training losses near float32's, its own checkpoint fingerprint and cache key."""
    from dataclasses import replace

    from circuits.cache import cache_key
    from circuits.train import checkpoint_fingerprint
    cfg64 = replace(tiny_cfg, model=replace(tiny_cfg.model, dtype="float64"))
    m32, data = build(tiny_cfg, seed=0, device="cpu")
    m64, _ = build(cfg64, seed=0, device="cpu")
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    assert all(torch.equal(p.double(), q) for p, q in zip(m32.parameters(), m64.parameters()))
    with torch.no_grad():
        assert (m32(data.tokens).double() - m64(data.tokens)).abs().max() < 1e-5
    r32, _, _ = _run(tiny_cfg)
    r64, model64, _ = _run(cfg64)
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    assert r64.history[-1]["train_loss"] < r64.history[0]["train_loss"]
    assert abs(r64.history[1]["train_loss"] - r32.history[1]["train_loss"]) < 1e-4
    fp = [checkpoint_fingerprint(m, data, tiny_cfg.optim, tiny_cfg.train, [Phase(40)], 0) for m in (m32, m64)]
    assert fp[0] != fp[1] and cache_key(tiny_cfg, 0, "budget") != cache_key(cfg64, 0, "budget")


def test_a_window_stop_rule_decides_after_a_resume_as_in_an_unbroken_run(tiny_cfg, tmp_path):
    """A settle rule looks back over a window of rows; a run killed half-way and resumed shows the
    rule its earlier rows first, so it stops at the same step with the same history."""
    from circuits.detect import settle_stop
    tiny_cfg.train.steps, tiny_cfg.train.eval_every, tiny_cfg.train.checkpoint_every = 400, 10, 20
    rule = lambda: settle_stop(window=60, tol=1.0, keys=("train_acc",))     # any change counts: stops at step 60
    whole, _, _ = _run(tiny_cfg, stop=rule(), checkpoint=tmp_path / "a.pt")

    class Killed(Exception):
        pass

    def kill_at_40(step, total, row):
        if step == 40:
            raise Killed
    try:
        _run(tiny_cfg, stop=rule(), checkpoint=tmp_path / "b.pt", progress=kill_at_40)
    except Killed:
        pass
    resumed, _, _ = _run(tiny_cfg, stop=rule(), checkpoint=tmp_path / "b.pt")
    assert whole.status == resumed.status == "stopped" and whole.step == resumed.step == 60
    assert _strip(resumed.history) == _strip(whole.history)
