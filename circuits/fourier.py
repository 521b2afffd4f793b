"""Fourier view of modular addition: split a network's logits into a C_gen and a C_mem part.

A generalising circuit for (x + y) mod p (Nanda et al. 2023; Varma et al. 2023, App. B) writes
logits of the form L[x, y, c] = sum_k a_k cos(w_k (x + y - c)) + b_k sin(w_k (x + y - c)),
w_k = 2 pi k / p, for a few key frequencies k: the logit of class c depends on (x, y, c) only
through s = (x + y - c) mod p. So

    C_gen part  = the projection of the logit table L [p, p, p] (all p^2 inputs, the p number
                  classes; extra vocabulary columns such as `=` are ignored) onto the functions of
                  s with zero mean, i.e. onto cos(w_k s), sin(w_k s) for k in `freqs`;
    C_mem part  = L - C_gen part (everything else, including per-input constant offsets).

The projection has a closed form: with g(s) = mean over (x, y) of L[x, y, (x + y - s) mod p]
(the "sum profile", [p]), C_gen[x, y, c] = g_K((x + y - c) mod p), where g_K is g with its mean
removed and, if `freqs` is given, restricted to those frequencies' cos/sin directions.

Which frequencies. During training the final network's key frequencies are not yet known, so
`strength_metrics` uses ALL frequencies 1..(p-1)/2 (no threshold, no look-ahead, deterministic),
and with `per_frequency=True` it also records each frequency's share of the C_gen correct-class
logit (`gen_logit_k{k}`, a few floats), so that the split along the final network's key
frequencies (the paper's choice for restricted loss) can be read off the history afterwards
(`gen_logit_of`, `overtake_step`). Consequences worth knowing (tests/test_fourier.py):

- At the correct class s = 0 for every input, so the C_gen correct-class logit is one number
  for all inputs: train_gen_logit == test_gen_logit (as w_G in the paper's toy model).
- With all frequencies it equals the mean over ALL p^2 inputs of (correct logit - mean class
  logit): gen = f * train + (1 - f) * test, train_mem = (1 - f) (train - test), test_mem =
  f (test - train), for a training fraction f and mean centred correct logits train, test. A pure
  memoriser (train margin m, test 0) thus shows a C_gen logit f * m: the part of "class x + y on the
  training pairs" that lies along the generalising direction; C_gen overtakes C_mem on the train
  set exactly when test > (1 - 2 f) * train. Restricting to a set K of key frequencies shrinks that
  leak to about f * m * |K| / ((p - 1) / 2).

`key_frequencies` reads the key frequencies off a logit table (energy along the cos/sin
directions of the output classes, summed over all inputs); `final_key_frequencies` applies it to
a trained network's C_gen part (its C_mem residual spreads over all frequencies).

Memory. The tables above are [p, p, p] (`split`, `sum_profile`, `addition_table`: for analyses at
small p). What runs during training never builds one, nor all logits at once: `Strengths` sums,
chunk by chunk of inputs, the logits by label t = x + y into M [p (t), p (c)] (then
g(s) = sum_t M[t, t - s] / p^2) and keeps one centred correct logit per input; and since each row
c -> g_K(x + y - c) of the C_gen table has the energy per frequency of g_K itself (a shift and a
reflection change only phases), the key frequencies of the C_gen part are those of g.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from circuits.metrics import logit_chunks
from circuits.tasks import Dataset


def basis(p: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Real orthonormal Fourier basis over the p classes, [p, p]: column 0 is the constant, columns
    2k-1 and 2k are cos(2 pi k c / p) and sin(2 pi k c / p), k = 1..(p-1)/2 (p odd)."""
    if p % 2 == 0:
        raise ValueError(f"the real Fourier basis here needs an odd p, got {p}")
    c = torch.arange(p, dtype=torch.float64)                                  # [p]
    cols = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        w = 2 * math.pi * k * c / p
        cols += [torch.cos(w) * math.sqrt(2 / p), torch.sin(w) * math.sqrt(2 / p)]
    return torch.stack(cols, 1).to(device=device, dtype=dtype)               # [p (class), p (direction)]


def frequency_energy(logits: torch.Tensor) -> torch.Tensor:
    """Squared norm of the logits along each frequency's cos/sin class directions, summed over the
    inputs: [..., p] -> [(p + 1) / 2], entry 0 the constant direction, entry k frequency k."""
    p = logits.shape[-1]
    coef = logits.reshape(-1, p).float() @ basis(p, logits.device)           # [n, p]
    e = (coef ** 2).sum(0)                                                   # [p]
    return torch.cat([e[:1], e[1:].view(-1, 2).sum(1)])                      # [(p + 1) / 2]


def key_frequencies(logits: torch.Tensor, threshold: float = 0.9, top: int | None = None) -> list[int]:
    """The smallest set of frequencies k >= 1 whose share of the logits' non-constant energy (over
    the class axis, all inputs) reaches `threshold`, or the `top` largest: sorted ints.
    logits: [..., p] (the number classes only)."""
    e = frequency_energy(logits)[1:]                                         # [(p - 1) / 2], k = 1..
    order = torch.argsort(e, descending=True)
    if top is None:
        share = torch.cumsum(e[order], 0) / e.sum().clamp_min(1e-30)
        top = int((share < threshold).sum().item()) + 1
    return sorted(int(k) + 1 for k in order[:top])


@lru_cache(maxsize=8)
def _shift_index(p: int, device: str) -> torch.Tensor:
    """(x + y - s) mod p, [p, p, p] long: gathering L[x, y, idx[x, y, s]] puts class x + y - s at s."""
    a = torch.arange(p, device=device)
    return (a[:, None, None] + a[None, :, None] - a[None, None, :]) % p


def sum_profile(L: torch.Tensor) -> torch.Tensor:
    """g(s) = mean over (x, y) of L[x, y, (x + y - s) mod p]: [p, p, p] -> [p]."""
    p = L.shape[-1]
    return L.gather(2, _shift_index(p, str(L.device))).mean((0, 1), dtype=torch.float64)  # [p] over s


def gen_profile(L: torch.Tensor, freqs=None) -> torch.Tensor:
    """The C_gen part's profile over s = x + y - c: g without its mean, restricted to `freqs`
    (None: all frequencies). [p, p, p] -> [p]."""
    p = L.shape[-1]
    g = sum_profile(L).double()                                              # [p]
    B = basis(p, L.device, torch.float64)                                    # [p, p]
    if freqs is None:
        cols = list(range(1, p))
    else:
        cols = [j for k in freqs for j in (2 * k - 1, 2 * k)]
    Bk = B[:, cols]                                                          # [p, 2 |K|]
    return Bk @ (Bk.T @ g)                                                   # [p]


def split(L: torch.Tensor, freqs=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_gen part, C_mem part) of a logit table L [p (x), p (y), p (c)]; they sum to L exactly."""
    p = L.shape[-1]
    gen = gen_profile(L, freqs).to(L.dtype)[_shift_index(p, str(L.device))]  # [p, p, p]: g_K(x + y - c)
    return gen, L - gen


def is_addition(data: Dataset) -> bool:
    """True for a 2-operand (x + y) mod p task (p odd) in layout `xy=` or `xy` with true labels and
    every pair once; False for any other (division, subtraction, K operands, `xopy=`, random labels)."""
    p, tok = data.p, data.tokens
    if p % 2 == 0 or tok.shape[1] not in (2, 3) or len(tok) != p * p or data.d_vocab != p + tok.shape[1] - 2:
        return False
    x, y = tok[:, 0], tok[:, 1]
    if tok.shape[1] == 3 and not bool((tok[:, 2] == p).all()):
        return False
    if bool((x >= p).any() or (y >= p).any()) or not bool((data.labels == (x + y) % p).all()):
        return False
    return bool((torch.bincount(x * p + y, minlength=p * p) == 1).all())


def addition_table(data: Dataset, logits: torch.Tensor) -> torch.Tensor | None:
    """The logit table L [p (x), p (y), p (c)] of an addition task (`is_addition`) from the logits of
    all its inputs [p^2, d_vocab] (the classes 0..p-1 only); None for any other task."""
    if not is_addition(data):
        return None
    p, x, y = data.p, data.tokens[:, 0], data.tokens[:, 1]
    L = torch.empty(p * p, p, dtype=logits.dtype, device=logits.device)
    L[x * p + y] = logits[:, :p]
    return L.view(p, p, p)


def gen_correct_by_frequency(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each frequency's share of the C_gen part at the correct class (s = 0): [(p - 1) / 2], entry
    k - 1 for frequency k, = (2 / p) sum_s g(s) cos(w_k s); summed over a set K it is the C_gen
    correct-class logit with `freqs` = K (the sin directions vanish at s = 0). From the logits of all
    p^2 pairs, each once, [p^2, p], and their labels x + y [p^2], without building the table: rows
    with the same x + y = t are summed first (M[t, c]), then g(s) = sum_t M[t, t - s] / p^2."""
    p = logits.shape[1]
    M = torch.zeros(p, p, dtype=logits.dtype, device=logits.device).index_add_(0, labels, logits)  # [t, c]
    g = M.double().gather(1, _diff_index(p, str(logits.device))).sum(0) / p ** 2  # [p] over s
    return _cos_table(p, str(logits.device)) @ g                             # [(p - 1) / 2]


@lru_cache(maxsize=8)
def _diff_index(p: int, device: str) -> torch.Tensor:
    """(t - s) mod p, [p (t), p (s)] long."""
    a = torch.arange(p, device=device)
    return (a[:, None] - a[None, :]) % p


@lru_cache(maxsize=8)
def _cos_table(p: int, device: str) -> torch.Tensor:
    """(2 / p) cos(2 pi k s / p), [(p - 1) / 2 (k = 1..), p (s)] float64."""
    k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    s = torch.arange(p, dtype=torch.float64)
    return ((2 / p) * torch.cos(2 * math.pi * k[:, None] * s[None, :] / p)).to(device)


class Strengths:
    """`strength_metrics` summed over chunks of the inputs (metrics.evaluate's accumulator protocol:
    add(start, logits of inputs start..), then result()): keeps M [p (t), p (c)], the number-class
    logits summed by label t = x + y, and each input's centred correct logit [n], in float64."""

    def __init__(self, model, data: Dataset, per_frequency: bool = False):
        self.data, self.per_frequency, self.ok = data, per_frequency, is_addition(data)
        if self.ok:
            device = data.tokens.device
            self.M = torch.zeros(data.p, data.p, dtype=torch.float64, device=device)
            self.correct = torch.zeros(len(data.tokens), dtype=torch.float64, device=device)

    def add(self, start: int, logits: torch.Tensor) -> None:
        if not self.ok:
            return
        L = logits[:, : self.data.p].double()                                    # [len, p]
        labels = self.data.labels[start : start + len(L)]
        self.M.index_add_(0, labels, L)
        self.correct[start : start + len(L)] = L.gather(1, labels[:, None])[:, 0] - L.mean(1)

    def profile(self) -> torch.Tensor:
        """g(s) = mean over (x, y) of L[x, y, (x + y - s) mod p] = sum_t M[t, t - s] / p^2, [p]."""
        p = self.data.p
        return self.M.gather(1, _diff_index(p, str(self.M.device))).sum(0) / p ** 2

    def by_frequency(self) -> torch.Tensor:
        """Each frequency's C_gen correct-class logit, [(p - 1) / 2] (as gen_correct_by_frequency)."""
        return _cos_table(self.data.p, str(self.M.device)) @ self.profile()

    def result(self) -> dict[str, float]:
        if not self.ok:
            return {}
        by_k = self.by_frequency()
        g0 = by_k.sum().item()                                                   # C_gen at the correct class, any input
        out = {}
        for name, idx in (("train", self.data.train_idx), ("test", self.data.test_idx)):
            if len(idx):
                out[f"{name}_gen_logit"] = g0
                out[f"{name}_mem_logit"] = self.correct[idx].mean().item() - g0
        if self.per_frequency:
            out.update({f"gen_logit_k{k + 1}": v for k, v in enumerate(by_k.tolist())})
        return out


def strength_metrics(model, data: Dataset, logits: torch.Tensor, per_frequency: bool = False) -> dict[str, float]:
    """For metrics.evaluate's `extra`: mean correct-class logit of the C_gen part (all frequencies;
    see the module docstring) and of the C_mem part, on the train and on the test inputs: keys
    train_gen_logit, train_mem_logit, test_gen_logit, test_mem_logit. Each part is read relative to
    its mean over the p classes (softmax ignores that offset), so gen + mem = correct logit - mean
    class logit. With per_frequency, also gen_logit_k{k} for every k (they sum to the gen logit),
    from which the C_gen logit of any frequency set can be read afterwards. {} for any task but
    2-operand addition in layout `xy=` / `xy` with true labels. metrics.evaluate computes it chunk
    by chunk (`Strengths`, this function's `accumulator`)."""
    acc = Strengths(model, data, per_frequency)
    acc.add(0, logits)
    return acc.result()


strength_metrics.accumulator = Strengths


def gen_logit_of(row: dict, freqs) -> float | None:
    """The C_gen correct-class logit restricted to `freqs`, from an eval row with gen_logit_k{k}."""
    vals = [row.get(f"gen_logit_k{k}") for k in freqs]
    return None if None in vals else sum(vals)


def with_key_logit(history: list[dict], freqs) -> list[dict]:
    """History rows without the gen_logit_k{k} entries, with `gen_key_logit` (the C_gen correct-class
    logit of `freqs` only) where they were there: what a run directory keeps of them."""
    out = []
    for row in history:
        kept = {k: v for k, v in row.items() if not k.startswith("gen_logit_k")}
        if freqs and "gen_logit_k1" in row:
            kept["gen_key_logit"] = gen_logit_of(row, freqs)
        out.append(kept)
    return out


def overtake_step(history: list[dict], after: int, freqs=None) -> int | None:
    """First eval step >= `after` at which the train C_gen logit exceeds the train C_mem logit
    (all frequencies, or only `freqs`: then C_mem is the rest of the centred correct logit)."""
    for row in history:
        if row["step"] < after or "train_gen_logit" not in row:
            continue
        gen, total = row["train_gen_logit"], row["train_gen_logit"] + row["train_mem_logit"]
        if freqs is not None:
            gen = gen_logit_of(row, freqs)
            if gen is None:
                continue
        if gen > total - gen:
            return row["step"]
    return None


def final_key_frequencies(model, data: Dataset, threshold: float = 0.9, chunk: int | None = None) -> list[int] | None:
    """Key frequencies of a trained model: those carrying `threshold` of the energy of its logits'
    C_gen part (its logits along cos/sin(w_k (x + y - c)); the C_mem residual, spread over all
    frequencies, would otherwise inflate the set). Read off the sum profile g, which has the C_gen
    part's energy per frequency (module docstring), from the logits chunk by chunk: no [p, p, p]
    table. None if the task is not addition."""
    if not is_addition(data):
        return None
    acc = Strengths(model, data)
    for start, logits in logit_chunks(model, data, chunk):
        acc.add(start, logits)
    return key_frequencies(acc.profile()[None], threshold)
