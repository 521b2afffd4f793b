"""The Fourier split of modular-addition logits into C_gen and C_mem parts (circuits/fourier.py)."""
import functools
import math

import pytest
import torch

from circuits import fourier
from circuits.config import TaskConfig
from circuits.metrics import evaluate
from circuits.tasks import make_dataset


def planted(p: int, amps: dict[int, float], phase: float = 0.3) -> torch.Tensor:
    """sum_k a_k cos(w_k (x + y - c) + phase): a pure C_gen table, [p, p, p]."""
    a = torch.arange(p, dtype=torch.float64)
    s = a[:, None, None] + a[None, :, None] - a[None, None, :]                 # [p, p, p]
    return sum(amp * torch.cos(2 * math.pi * k * s / p + phase) for k, amp in amps.items())


def as_logits(data, L: torch.Tensor, extra_cols: int = 1) -> torch.Tensor:
    """A table [p, p, p] as the logits of data's inputs [n, p + extra_cols] (junk `=` columns)."""
    x, y = data.tokens[:, 0], data.tokens[:, 1]
    return torch.cat([L[x, y], torch.full((len(x), extra_cols), -7.0, dtype=L.dtype)], 1)


@pytest.mark.parametrize("p", [5, 11, 47])
def test_basis_is_orthonormal(p):
    B = fourier.basis(p, dtype=torch.float64)
    assert B.shape == (p, p)
    assert torch.allclose(B.T @ B, torch.eye(p, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=torch.float64), atol=1e-10)


def test_planted_table_is_all_gen_and_random_table_mostly_mem():
    p = 23
    L = planted(p, {2: 3.0, 7: 1.0})
    gen, mem = fourier.split(L)
    assert torch.allclose(gen + mem, L) and mem.abs().max() < 1e-9
    offsets = torch.randn(p, p, 1, dtype=torch.float64)                         # per-input constants: C_mem
    gen2, mem2 = fourier.split(L + offsets)
    assert torch.allclose(gen2, gen, atol=1e-9) and torch.allclose(mem2, offsets.expand(p, p, p), atol=1e-9)
    R = torch.randn(p, p, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen, mem = fourier.split(R)
    assert torch.allclose(gen + mem, R)
    assert (gen ** 2).sum() / (R ** 2).sum() < 0.01                              # ~ (p - 1) / p^3 of the energy
    g_k, m_k = fourier.split(R, freqs=[3])
    assert torch.allclose(g_k + m_k, R) and (g_k ** 2).sum() < (gen ** 2).sum()


class TableModel(torch.nn.Module):
    """A 'network' whose logits on input (x, y, =) are row x * p + y of a fixed table [p^2, d_vocab]."""

    def __init__(self, logits: torch.Tensor, p: int):
        super().__init__()
        self.p, self.table = p, torch.nn.Parameter(logits.float(), requires_grad=False)

    def forward(self, tokens):
        return self.table[tokens[:, 0] * self.p + tokens[:, 1]]


def known_network(p: int = 23, seed: int = 1):
    """Logits with known parts: C_gen = sum_k a_k cos(w_k (x + y - c) + phi_k) for K = {2, 5, 9}
    (frequency 5 a pure sine, phi = -pi/2), plus a C_mem part built from noise with its own
    functions-of-(x + y - c) part removed by hand (no circuits code): returns
    (L [p, p, p], gen [p, p, p], mem [p, p, p], amps, phases)."""
    amps, phases = {2: 3.0, 5: 2.0, 9: 1.5}, {2: 0.4, 5: -math.pi / 2, 9: 2.0}
    a = torch.arange(p, dtype=torch.float64)
    s = (a[:, None, None] + a[None, :, None] - a[None, None, :]) % p                 # x + y - c mod p
    gen = sum(amp * torch.cos(2 * math.pi * k * s / p + phases[k]) for k, amp in amps.items())
    noise = torch.randn(p, p, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    profile = torch.zeros(p, dtype=torch.float64)                                   # mean of noise at each s
    profile.index_add_(0, s.flatten().long(), noise.flatten())
    profile = profile / p ** 2
    mem = 0.3 * (noise - (profile - profile.mean())[s.long()])                      # no function of s left
    return gen + mem, gen, mem, amps, phases


def test_key_frequencies_and_strengths_of_a_known_network():
    """Exact values on a network with known logits: the key frequencies, the energy per frequency,
    the split into C_gen and C_mem, and the train/test C_gen and C_mem correct-class logits (a wrong
    sign, a wrong frequency index or a dropped sine term each break an assertion here)."""
    p = 23
    L, gen, mem, amps, phases = known_network(p)
    # the split recovers both parts exactly
    g, m = fourier.split(L)
    assert torch.allclose(g, gen, atol=1e-9) and torch.allclose(m, mem, atol=1e-9)
    # energy per frequency of the C_gen part: a_k^2 p^3 / 2 at the planted k, nothing elsewhere
    e = fourier.frequency_energy(g)
    want = torch.zeros((p + 1) // 2, dtype=torch.float64)
    for k, amp in amps.items():
        want[k] = amp ** 2 * p ** 3 / 2
    assert torch.allclose(e.double(), want, rtol=1e-4, atol=1e-2)
    # key frequencies: all three carry 90% (9 + 4 + 2.25; the top two only 85%), the top two are 2 and 5
    assert fourier.key_frequencies(g, threshold=0.9) == [2, 5, 9]
    assert fourier.key_frequencies(g, threshold=0.8) == [2, 5]
    assert fourier.key_frequencies(g, top=1) == [2]
    # the sum profile g(s) (mean logit of class x + y - s), from the table and chunk by chunk, is the
    # planted sum_k a_k cos(w_k s + phi_k) up to a constant (mem's mean)
    data = make_dataset(TaskConfig(p=p, frac=0.4))
    logits = as_logits(data, L)
    model = TableModel(logits, p)
    sv = torch.arange(p, dtype=torch.float64)
    planted_g = sum(amp * torch.cos(2 * math.pi * k * sv / p + phases[k]) for k, amp in amps.items())
    acc = fourier.Strengths(model, data)
    for start in range(0, len(logits), 50):
        acc.add(start, logits[start : start + 50])
    for g_s in (fourier.sum_profile(L), acc.profile()):
        assert torch.allclose(g_s - g_s.mean(), planted_g, atol=1e-5)
    # a trained network's key frequencies (read off the sum profile, chunk by chunk): the same
    assert fourier.final_key_frequencies(model, data, chunk=50) == [2, 5, 9]
    assert fourier.final_key_frequencies(model, data, threshold=0.8) == [2, 5]
    # strengths: C_gen at the correct class (x + y - c = 0) is sum_k a_k cos(phi_k), on train and test
    # alike; frequency by frequency a_k cos(phi_k) (0 for the pure sine); C_mem is the rest
    row = fourier.strength_metrics(model, data, logits, per_frequency=True)
    gen_k = {k: amps.get(k, 0.0) * math.cos(phases.get(k, 0.0)) for k in range(1, (p + 1) // 2)}
    for k, v in gen_k.items():
        assert row[f"gen_logit_k{k}"] == pytest.approx(v, abs=1e-5)
    assert row["gen_logit_k5"] == pytest.approx(0.0, abs=1e-5)
    total = sum(gen_k.values())
    x, y = data.tokens[:, 0], data.tokens[:, 1]
    centred_mem = mem[x, y, (x + y) % p] - mem[x, y].mean(1)                        # mem's share of the margin
    for split, idx in (("train", data.train_idx), ("test", data.test_idx)):
        assert row[f"{split}_gen_logit"] == pytest.approx(total, abs=1e-5)
        assert row[f"{split}_mem_logit"] == pytest.approx(centred_mem[idx].mean().item(), abs=1e-5)
    # the same numbers through metrics.evaluate, chunk by chunk
    for chunk in (7, 10 ** 6):
        ev = evaluate(model, data, extra=[functools.partial(fourier.strength_metrics, per_frequency=True)], chunk=chunk)
        assert {k: ev[k] for k in row} == pytest.approx(row, abs=1e-5)


def test_evaluate_in_chunks_equals_all_at_once():
    """metrics.evaluate sums chunk by chunk (never a [n, d_vocab] tensor of all inputs): the numbers
    equal those from all logits at once to 1e-6, with duplicates in train_idx weighted as before."""
    from circuits.config import ModelConfig
    from circuits.metrics import all_logits, split_metrics
    from circuits.models import build_model
    data = make_dataset(TaskConfig(p=13, frac=0.5))
    data = data.with_train(torch.cat([data.train_idx, data.train_idx[:5]]))          # 5 inputs twice
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", d_model=8, d_mlp=16), data.d_vocab, data.n_ctx)
    sizes = []
    model.register_forward_hook(lambda mod, inp, out: sizes.append(len(inp[0])))
    extra = [functools.partial(fourier.strength_metrics, per_frequency=True)]
    small = evaluate(model, data, extra, chunk=7)
    assert max(sizes) == 7 and len(sizes) == math.ceil(13 * 13 / 7)
    whole = evaluate(model, data, extra, chunk=10 ** 6)
    assert small == pytest.approx(whole, rel=1e-6, abs=1e-6)
    logits = all_logits(model, data)
    ref = {**split_metrics(logits[data.train_idx], data.labels[data.train_idx], "train"),
           **split_metrics(logits[data.test_idx], data.labels[data.test_idx], "test"),
           **fourier.strength_metrics(model, data, logits, per_frequency=True)}
    assert {k: small[k] for k in ref} == pytest.approx(ref, rel=1e-6, abs=1e-6)
    # an extra metric without an accumulator still gets all logits, once
    seen = []
    evaluate(model, data, [lambda m, d, lg: seen.append(lg.shape) or {}], chunk=7)
    assert seen == [(13 * 13, data.d_vocab)]


def test_strength_metrics_on_synthetic_logits():
    data = make_dataset(TaskConfig(p=11, frac=0.4))
    p, f = data.p, len(data.train_idx) / data.p ** 2
    gen_only = fourier.strength_metrics(None, data, as_logits(data, planted(p, {1: 2.0, 4: 1.0}, phase=0.0)), per_frequency=True)
    assert gen_only["train_gen_logit"] == pytest.approx(3.0) and gen_only["test_gen_logit"] == pytest.approx(3.0)
    assert abs(gen_only["train_mem_logit"]) < 1e-6 and abs(gen_only["test_mem_logit"]) < 1e-6
    assert gen_only["gen_logit_k1"] == pytest.approx(2.0) and gen_only["gen_logit_k4"] == pytest.approx(1.0)
    assert fourier.gen_logit_of(gen_only, [4]) == pytest.approx(1.0)
    # a pure memoriser (margin m on the training pairs' correct class, nothing on test) leaks f * m into C_gen
    m, L = 5.0, torch.zeros(p * p, p, dtype=torch.float64)
    L[data.train_idx, data.labels[data.train_idx]] = m
    memo = fourier.strength_metrics(None, data, torch.cat([L, torch.zeros(p * p, 1, dtype=L.dtype)], 1))
    centred = m * (1 - 1 / p)
    assert memo["train_gen_logit"] == pytest.approx(f * centred)
    assert memo["train_mem_logit"] == pytest.approx((1 - f) * centred)
    assert memo["test_mem_logit"] == pytest.approx(-f * centred)


def test_split_is_independent_of_input_order_and_sums_back():
    data = make_dataset(TaskConfig(p=7, frac=0.5))
    perm = torch.randperm(len(data.tokens), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(len(data.tokens), data.d_vocab, generator=torch.Generator().manual_seed(2))
    shuffled = type(data)(data.tokens[perm], data.labels[perm], torch.argsort(perm)[data.train_idx],
                          torch.argsort(perm)[data.test_idx], data.p, data.d_vocab)
    a = fourier.strength_metrics(None, data, logits)
    b = fourier.strength_metrics(None, shuffled, logits[perm])
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    centred = logits[:, :7] - logits[:, :7].mean(1, keepdim=True)
    for split, idx in (("train", data.train_idx), ("test", data.test_idx)):
        total = centred[idx, data.labels[idx]].mean().item()
        assert a[f"{split}_gen_logit"] + a[f"{split}_mem_logit"] == pytest.approx(total, abs=1e-5)
    # the metric's shortcut (no table) agrees with the table projection, frequency by frequency
    L = fourier.addition_table(data, logits)
    by_k = fourier.gen_correct_by_frequency(logits[:, :7], data.labels)
    assert by_k.sum().item() == pytest.approx(fourier.gen_profile(L)[0].item(), abs=1e-6)
    for k in (1, 2, 3):
        assert by_k[k - 1].item() == pytest.approx(fourier.gen_profile(L, [k])[0].item(), abs=1e-6)
        assert fourier.split(L, [k])[0][0, 0, 0].item() == pytest.approx(by_k[k - 1].item(), abs=1e-5)


@pytest.mark.parametrize("task", [TaskConfig(p=11, op="/"), TaskConfig(p=11, op="-"), TaskConfig(p=11, op="*"),
                                  TaskConfig(p=11, layout="xopy="), TaskConfig(p=11, random_labels=True),
                                  TaskConfig(p=5, k=3), TaskConfig(p=12)])
def test_strength_metrics_empty_for_other_tasks(task):
    data = make_dataset(task)
    assert fourier.strength_metrics(None, data, torch.randn(len(data.tokens), data.d_vocab)) == {}


@pytest.mark.parametrize("layout", ["xy=", "xy"])
def test_strength_metrics_through_evaluate(tiny_cfg, layout):
    from circuits.config import ModelConfig
    from circuits.models import build_model
    data = make_dataset(TaskConfig(p=11, frac=0.5, layout=layout))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", d_model=8, d_mlp=16), data.d_vocab, data.n_ctx)
    row = evaluate(model, data, extra=[fourier.strength_metrics])
    assert {"train_gen_logit", "train_mem_logit", "test_gen_logit", "test_mem_logit"} <= set(row)
    assert fourier.final_key_frequencies(model, data)


def test_overtake_step():
    rows = [{"step": s, "train_gen_logit": g, "train_mem_logit": m, "gen_logit_k1": 0.8 * g, "gen_logit_k2": 0.2 * g}
            for s, g, m in [(0, 0.0, 0.0), (10, 1.0, 5.0), (20, 4.0, 3.0), (30, 6.0, 2.0), (40, 9.0, 1.0)]]
    assert fourier.overtake_step(rows, after=10) == 20
    assert fourier.overtake_step(rows, after=25) == 30
    assert fourier.overtake_step(rows, after=10, freqs=[1]) == 30   # step 20: gen 3.2 vs mem 3.8
    assert fourier.overtake_step(rows, after=10, freqs=[1, 2]) == 20
    assert fourier.overtake_step(rows, after=50) is None
    thin = fourier.with_key_logit(rows, [1])
    assert thin[2]["gen_key_logit"] == pytest.approx(3.2) and not any(k.startswith("gen_logit_k") for k in thin[2])


def test_grokking_protocol_reports_strengths(tiny_cfg, tmp_path):
    from protocols import grokking
    v = grokking.run(tiny_cfg, tmp_path).to_dict()
    s = v["measured"]["per_seed"][0]
    assert isinstance(s["key_frequencies"], list) and all(isinstance(k, int) for k in s["key_frequencies"])
    assert "gen_overtakes_mem_step" in s and "median_gen_overtakes_mem_step" in v["measured"]
    assert (tmp_path / "figure.png").exists()
    csv = (tmp_path / "metrics.csv").read_text()
    assert "gen_logit," in csv and "gen_logit_k" not in csv


def test_grokking_protocol_on_division_has_no_strengths(tiny_cfg, tmp_path):
    import dataclasses

    from protocols import grokking
    cfg = dataclasses.replace(tiny_cfg, task=TaskConfig(p=11, frac=0.5, op="/"))
    v = grokking.run(cfg, tmp_path).to_dict()
    assert "key_frequencies" not in v["measured"]["per_seed"][0] and (tmp_path / "figure.png").exists()
    assert "gen_logit" not in (tmp_path / "metrics.csv").read_text()
