import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig  # noqa: E402


@pytest.fixture
def tiny_cfg():
    """A config that trains in about a second: p = 11, a small transformer."""
    return Config(protocol="grokking", task=TaskConfig(p=11, frac=0.5),
                  model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
                  optim=OptimConfig(lr=3e-3), train=TrainConfig(steps=40, eval_every=10, checkpoint_every=10),
                  seeds=[0])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield
