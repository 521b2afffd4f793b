"""Networks are outputs: final weights and a trajectory as safetensors, `circuits.load`, live metrics."""
import csv

import pytest
import torch

import circuits
import circuits.config
import circuits.experiment
from circuits import weights
from circuits.errors import CircuitsError
from circuits.metrics import evaluate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny grokking run (p = 11, two seeds) that keeps a snapshot every 20 steps."""
    out = tmp_path_factory.mktemp("load") / "run"
    circuits.run("grokking", preset="quick", out=out, p=11,
                 overrides=["train.steps=60", "train.eval_every=10", "train.save_every=20", "seeds=[0,1]"])
    return out


def test_final_weights_are_safetensors_per_seed(run_dir):
    for seed in (0, 1):
        path = run_dir / f"seed{seed}" / "model.safetensors"
        assert path.is_file()
        state = weights.load_weights(path)
        assert "W_E" in state and "W_U" in state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_a_loaded_model_reproduces_the_runs_final_test_accuracy_exactly(run_dir):
    run = circuits.load(run_dir)
    assert run.seeds == [0, 1] and run.config.task.p == 11 and run.verdict["protocol"] == "grokking"
    for seed in run.seeds:
        model = run.model(seed)
        assert not model.training
        row = evaluate(model, run.data)
        final = run.metrics[(run.metrics.run == f"seed{seed}") & (run.metrics.split == "test")
                            & (run.metrics.metric == "acc")].sort_values("step").value.iloc[-1]
        assert row["test_acc"] == final
    logits = run.model(0).plain(run.data.tokens)                    # every position, [n, n_ctx, d_vocab]
    assert logits.shape == (len(run.data.tokens), run.data.n_ctx, run.data.d_vocab)


def test_the_trajectory_has_a_snapshot_every_save_every_steps(run_dir):
    run = circuits.load(run_dir)
    steps = [s for s, _ in run.trajectory(0)]
    last = int(run.metrics[run.metrics.run == "seed0"].step.max())
    assert steps == list(range(0, last + 1, 20))
    first = dict(run.trajectory(0))[0]
    fresh, _ = circuits.experiment.build(run.config, 0, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), fresh.state_dict().values()))


def test_live_metrics_are_on_disk_per_seed_and_match_metrics_csv(run_dir):
    with open(run_dir / "seed0" / "metrics.live.csv", newline="") as f:
        live = list(csv.DictReader(f))
    run = circuits.load(run_dir)
    acc = run.metrics[(run.metrics.run == "seed0") & (run.metrics.metric == "acc") & (run.metrics.split == "test")]
    assert [int(r["step"]) for r in live] == sorted(acc.step.astype(int).tolist())
    assert [float(r["test_acc"]) for r in live] == pytest.approx(acc.sort_values("step").value.tolist(), abs=0)


def test_load_refuses_a_folder_that_is_not_a_run_and_a_tampered_config(run_dir, tmp_path):
    with pytest.raises(CircuitsError, match="not a circuits run directory"):
        circuits.load(tmp_path)
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    text = (copy / "config.yaml").read_text().replace("weight_decay: 1.0", "weight_decay: 0.5")
    (copy / "config.yaml").write_text(text)
    with pytest.raises(CircuitsError, match="not the config its run.json records"):
        circuits.load(copy)


def test_a_truncated_weights_file_is_one_clear_error(run_dir, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes((run_dir / "seed0" / "model.safetensors").read_bytes()[:50])
    with pytest.raises(CircuitsError, match="not a readable safetensors file"):
        weights.load_weights(bad)


def test_log_tensorboard_writes_the_evaluation_rows_as_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    circuits.run("grokking", preset="quick", out=out, p=11, arch="mlp",
                 overrides=["train.steps=30", "train.eval_every=10", "train.log=tensorboard"])
    events = EventAccumulator(str(out / "tensorboard" / "seed0"))
    events.Reload()
    assert {"train/acc", "test/acc", "train/loss", "all/param_norm"} <= set(events.Tags()["scalars"])
    run = circuits.load(out)
    m = run.metrics
    test_acc = m[(m.run == "seed0") & (m.split == "test") & (m.metric == "acc")].sort_values("step")
    logged = events.Scalars("test/acc")
    assert [e.step for e in logged] == test_acc.step.tolist()
    assert [e.value for e in logged] == pytest.approx(test_acc.value.tolist(), rel=1e-6)


def test_log_wandb_writes_an_offline_run_per_seed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    circuits.run("grokking", preset="quick", out=out, p=11, arch="mlp",
                 overrides=["train.steps=20", "train.eval_every=10", "train.log=wandb"])
    offline = list((out / "wandb" / "wandb").glob("offline-run-*"))
    assert len(offline) == len(circuits.load(out).config.seeds) and all(list(o.glob("*.wandb")) for o in offline)


def test_an_unknown_logger_is_refused():
    with pytest.raises(CircuitsError, match="train.log must be one of"):
        circuits.config.TrainConfig(log="mlflow")
