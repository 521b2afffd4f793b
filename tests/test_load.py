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


def test_ungrokking_writes_every_network_it_trained_and_they_load_with_their_accuracy(tmp_path, monkeypatch):
    """A cache-based protocol's networks are outputs too: ungrokking at p = 17 (a small MLP that
    groks in a few hundred steps) keeps the grokked network and each subset run in networks/, and a
    loaded network's test accuracy equals the run's recorded final one exactly. While they train,
    each one's evaluation rows are appended to live/NAME.csv (the same rows as metrics.csv)."""
    from circuits import api
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ug"
    v = api.run_protocol("ungrokking", "quick", out=out, arch="mlp", overrides=[
        "task.p=17", "task.frac=0.8", "model.d_model=16", "model.d_mlp=64", "optim.lr=0.03", "train.steps=1500",
        "params.sizes=[20, 100]", "params.subset_seeds=[0]", "params.weight_decays=[1.0]", "params.steps=60",
        "params.eval_every=20", "params.workers=1"])
    run = circuits.load(out)
    assert run.verdict["measured"]["pretrain"]["0"]["test_acc"] >= 0.99
    runs = {r["name"]: r for r in v["measured"]["runs"]}
    assert run.networks == sorted(["seed0-grok", *runs])
    for name, r in runs.items():
        model = run.network(name)
        assert not model.training and evaluate(model, run.data)["test_acc"] == r["test_acc"]
    assert weights.load_weights(out / "networks" / "seed0-grok.safetensors").keys() == run.network("seed0-grok").state_dict().keys()
    with pytest.raises(CircuitsError, match="did you mean 'seed0-grok'"):
        run.network("seed0-grk")
    for name in run.networks:                              # each network's rows were on disk as it trained
        with open(out / "live" / f"{name}.csv", newline="") as f:
            live = list(csv.DictReader(f))
        test = run.metrics[(run.metrics.run == name) & (run.metrics.split == "test") & (run.metrics.metric == "acc")]
        assert [float(r["test_acc"]) for r in live] == test.sort_values("step").value.tolist()


def test_efficiency_and_mixture_networks_are_in_the_run_directory(tmp_path, monkeypatch):
    from circuits import api
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    api.run_protocol("efficiency", "quick", out=tmp_path / "eff", overrides=[
        "model.d_model=16", "model.d_mlp=32", "task.p=13", "seeds=[0]", "params.mem_sizes=[20,50]",
        "params.gen_sizes=[120]", "params.steps=40", "params.eval_every=20", "params.n_boot=20", "params.workers=1"])
    assert circuits.load(tmp_path / "eff").networks == ["gen-D120-seed0", "mem-D20-seed0", "mem-D50-seed0"]
    assert sorted(f.stem for f in (tmp_path / "eff" / "live").glob("*.csv")) == circuits.load(tmp_path / "eff").networks
    v = api.run_protocol("mixture", "quick", out=tmp_path / "mix", arch="mlp", overrides=[
        "model.d_model=16", "model.d_mlp=32", "task.p=13", "seeds=[0]", "train.steps=40", "params.steps=20"])
    run = circuits.load(tmp_path / "mix")
    assert run.networks == ["seed0-C_gen", "seed0-C_mem"] and v["protocol"] == "mixture"
    assert sorted(f.stem for f in (tmp_path / "mix" / "live").glob("*.csv")) == run.networks
    for name in run.networks:
        assert run.network(name)(run.data.tokens[:3]).shape == (3, run.data.d_vocab)
