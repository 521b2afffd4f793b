"""Figures: seed bands from the long frame, titles that name the setting."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from circuits import plots  # noqa: E402
from circuits.config import Config, ModelConfig, TaskConfig  # noqa: E402


def _hist(rate, last):
    return [{"step": s, "test_acc": min(1.0, s / rate)} for s in range(0, last, 50)]


def test_seed_band_draws_a_line_per_seed_one_legend_entry_and_the_min_max_band():
    fig, ax = plots.subplots(1, 1)
    a = ax[0, 0]
    plots.seed_band(a, [_hist(1000, 2000), _hist(1500, 1500)], "test_acc", label="test")
    a.legend()
    assert [t.get_text() for t in a.get_legend().get_texts()] == ["test"]
    seeds = [ln for ln in a.get_lines() if len(ln.get_xdata()) > 0 and ln.get_linewidth() > 0]
    assert len(seeds) == 2
    band = [c for c in a.collections if len(c.get_paths())]
    ys = np.concatenate([p.vertices[:, 1] for c in band for p in c.get_paths()])
    xs = np.concatenate([p.vertices[:, 0] for c in band for p in c.get_paths()])
    at = np.isclose(xs, 600)
    assert np.isclose(ys[at].min(), 600 / 1500) and np.isclose(ys[at].max(), 600 / 1000)
    assert a.get_xscale() == "log"


def test_a_saved_figure_names_model_p_and_seeds(tmp_path):
    cfg = Config(protocol="grokking", task=TaskConfig(p=47), model=ModelConfig(arch="mlp", d_mlp=512), seeds=[0, 1])
    fig, ax = plots.subplots(1, 1)
    ax[0, 0].plot([0, 1], [0, 1])
    plots.save(fig, tmp_path, cfg)
    assert (tmp_path / "figure.png").stat().st_size > 1000
    title = plots.setting(cfg)
    assert "MLP" in title and "p = 47" in title and "seeds [0, 1]" in title
    assert fig._suptitle.get_text() == title
