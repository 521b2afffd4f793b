"""The trained-circuit cache across step caps (circuits/cache.py from_other_cap): a run that hit a
smaller cap continues from its final state, a run that stopped by its rule is the same run under
any cap it reaches, and either gives what an unbroken run under the new cap gives."""
from dataclasses import replace

import pytest
import torch

from circuits import cache
from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig


def _cfg(steps: int) -> Config:
    return Config(task=TaskConfig(p=11, frac=0.6), model=ModelConfig(arch="mlp", d_model=16, d_mlp=32),
                  optim=OptimConfig(lr=3e-3), train=TrainConfig(steps=steps, eval_every=10, checkpoint_every=10),
                  seeds=[0])


def _at(step):
    return (lambda row: row["step"] >= step), f"at{step}"


def _untimed(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def _unbroken(tmp_path, monkeypatch, cfg, seed=0, rule=(None, "budget")):
    """The run trained from step 0 in a cache of its own."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "unbroken"))
    t, _ = cache.trained(cfg, seed, stop=rule[0], stop_name=rule[1], quiet=True)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    return t


def _same(a, b):
    assert _untimed(a.result.history) == _untimed(b.result.history)
    assert a.result.status == b.result.status and a.result.step == b.result.step
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_a_run_that_hit_its_cap_continues_from_there_to_a_larger_cap(tmp_path, monkeypatch, capsys):
    want = _unbroken(tmp_path, monkeypatch, _cfg(40))
    short, path20 = cache.trained(_cfg(20), 0, quiet=True)
    assert short.result.status == "done" and (path20.parent / cache.FINAL).exists()
    capsys.readouterr()
    long, path40 = cache.trained(_cfg(40), 0, quiet=True)
    assert f"continuing {path20.parent.name} from its 20-step cap to 40 steps" in capsys.readouterr().err
    assert long.result.history[:3] == short.result.history       # steps 0-20 read, not trained again
    _same(long, want)
    again, _ = cache.trained(_cfg(40), 0, quiet=True)                # and it is now an entry of its own
    _same(again, want)
    assert sorted(cache.known_caps(_cfg(40), 0, "budget")) == [20, 40]


def test_a_final_state_that_is_missing_or_of_another_run_is_not_continued(tmp_path, monkeypatch, capsys):
    want = _unbroken(tmp_path, monkeypatch, _cfg(40))
    _, path = cache.trained(_cfg(20), 0, quiet=True)
    _, other = cache.trained(_cfg(20), 1, quiet=True)                # seed 1: another run
    (other.parent / cache.FINAL).replace(path.parent / cache.FINAL)
    capsys.readouterr()
    long, _ = cache.trained(_cfg(40), 0, quiet=True)
    assert "continuing" not in capsys.readouterr().err
    _same(long, want)                                                # trained from step 0, right anyway
    (path.parent / cache.FINAL).unlink()
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache2"))
    cache.trained(_cfg(20), 0, quiet=True)
    cache.entry_path(_cfg(20), 0).parent.joinpath(cache.FINAL).unlink()      # an entry from before final states
    _same(cache.trained(_cfg(40), 0, quiet=True)[0], want)


@pytest.mark.parametrize("cap", [30, 80])
def test_a_run_that_stopped_by_its_rule_is_that_run_under_any_cap_it_reaches(tmp_path, monkeypatch, capsys, cap):
    rule = _at(20)
    want = _unbroken(tmp_path, monkeypatch, _cfg(cap), rule=rule)
    first, path = cache.trained(_cfg(40), 0, stop=rule[0], stop_name=rule[1], quiet=True)
    assert first.result.status == "stopped" and first.result.step == 20
    assert not (path.parent / cache.FINAL).exists()                  # stopped: nothing to continue
    read, path_cap = cache.trained(_cfg(cap), 0, stop=rule[0], stop_name=rule[1], quiet=True)
    assert path_cap != path and path_cap.exists()
    assert read.result.history == first.result.history               # times too: read, not trained
    _same(read, want)


def test_a_smaller_cap_than_the_stop_and_a_cap_off_the_evaluations_train(tmp_path, monkeypatch, capsys):
    rule = _at(20)
    cache.trained(_cfg(40), 0, stop=rule[0], stop_name=rule[1], quiet=True)
    for cap in (10, 15):       # 10: it has not stopped yet; 15: then 20 is past it
        want = _unbroken(tmp_path, monkeypatch, _cfg(cap), rule=rule)
        got, _ = cache.trained(_cfg(cap), 0, stop=rule[0], stop_name=rule[1], quiet=True)
        assert got.result.step == cap and got.result.status == "done"
        _same(got, want)
    cache.trained(_cfg(15), 1, quiet=True)          # hit a cap between evaluations: an unbroken run has no row there
    capsys.readouterr()
    got, _ = cache.trained(_cfg(30), 1, quiet=True)
    assert "continuing" not in capsys.readouterr().err
    _same(got, _unbroken(tmp_path, monkeypatch, _cfg(30), seed=1))


def test_the_time_bound_and_the_stacked_path_count_only_what_is_left(tmp_path, monkeypatch):
    """steps_left (every protocol's `budget`) and prestack see the other caps as `trained` does."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    rule = _at(20)
    assert cache.steps_left(_cfg(40), 0, "budget") == 40                      # nothing known yet
    cache.trained(_cfg(20), 0, quiet=True)
    cache.trained(_cfg(40), 1, stop=rule[0], stop_name=rule[1], quiet=True)
    assert cache.steps_left(_cfg(20), 0, "budget") == 0                       # in the cache
    assert cache.steps_left(_cfg(50), 0, "budget") == 30                      # continues from 20
    assert cache.steps_left(_cfg(80), 1, rule[1]) == 0                        # stopped at 20: the same run
    assert cache.steps_left(_cfg(10), 1, rule[1]) == 10                       # stopped after this cap
    runs = [(_cfg(50), 0, None, "budget"), (_cfg(80), 1, rule[0], rule[1]), (_cfg(50), 2, None, "budget")]
    assert cache.prestack(runs) == 1                                          # seed 2 only
    assert not cache.entry_path(_cfg(50), 0).exists() and cache.entry_path(_cfg(50), 2).exists()
