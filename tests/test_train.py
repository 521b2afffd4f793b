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


def test_phases_switch_training_set_and_weight_decay(tiny_cfg):
    model, data = build(tiny_cfg, seed=0, device="cpu")
    sub = nested_subset(data.train_idx, 10, seed=0)
    r = train(model, data, tiny_cfg.optim, tiny_cfg.train,
              phases=[Phase(20), Phase(20, train_idx=sub, weight_decay=0.0, fresh_optimizer=True)])
    assert [row["phase"] for row in r.history] == [0, 0, 0, 1, 1]
    assert r.step == 40


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
