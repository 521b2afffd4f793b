"""A cache of trained circuits: a network trained by a config from a seed (to a named stop rule) is
kept under $CIRCUITS_CACHE (default ~/.cache/circuits) and reused by later runs and protocols.

The key is a hash of everything that decides the trained weights: task, model, optimiser, step
budget, seed, the stop rule's name, the entry format (CACHE_FORMAT) and the training code
(`code_fingerprint`: the source of the trainer, tasks, metrics, models and `experiment.build`,
comments and docstrings aside). Format and code are stored in the entry too and checked on
reading: a mismatch is a miss. Training into the cache checkpoints as it goes, so a killed run
resumes; the finished entry is written atomically and is never half-read; a truncated one is
trained again. While an entry trains its lock is held: a second process asking for it waits,
then reads the first one's result instead of training it again.

Across step caps (train.steps): each run's caps are listed in an index (caps/), and a run asked
for under a new cap is read from the same run under another where that decides it (`other_caps`):
one that stopped by its rule within the new cap is the same run; one that hit a smaller cap keeps
its final state (final.pt) and continues from there. Either gives what an unbroken run gives.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import sys
import textwrap
from pathlib import Path

from circuits import experiment
from circuits.config import Config, to_dict
from circuits.errors import CircuitsError
from circuits.experiment import Trained, build, torch_threads
from circuits.progress import Bar
from circuits.store import CorruptFile, cache_dir, config_hash, load_torch, locked, read_json, save_torch, write_json
from circuits.train import Phase, Result, checkpoint_fingerprint, resolve_device, train

CACHE_FORMAT = 2                 # bump when what an entry holds, or how it is keyed, changes
PACKAGE = Path(__file__).resolve().parent
CODE_FILES = ("train.py", "tasks.py", "metrics.py", "models/*.py")
FINAL = "final.pt"               # a run that hit its cap keeps its last checkpoint here, to be continued


def key_fields(cfg: Config, seed: int, stop_name: str) -> dict:
    """Everything that decides a cached network's weights (its cache key is their hash)."""
    d = to_dict(cfg)
    train_cfg = {k: v for k, v in d["train"].items() if k not in ("device", "threads", "checkpoint_every")}
    model = {k: v for k, v in d["model"].items() if not (k == "dtype" and v == "float32")}  # the default: as before
    return {"task": d["task"], "model": model, "optim": d["optim"], "train": train_cfg,
            "seed": seed, "stop": stop_name, "format": CACHE_FORMAT, "code": code_fingerprint()}


def cache_key(cfg: Config, seed: int, stop_name: str) -> str:
    return config_hash(key_fields(cfg, seed, stop_name))


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the syntax trees (docstrings dropped, so comment and docstring edits keep the
    cache) of the code that decides a trained network: CODE_FILES and experiment.build."""
    h = hashlib.sha256()
    for pattern in CODE_FILES:
        for path in sorted(PACKAGE.glob(pattern)):
            h.update(path.relative_to(PACKAGE).as_posix().encode())
            h.update(source_digest(path.read_text()).encode())
    h.update(source_digest(textwrap.dedent(inspect.getsource(experiment.build))).encode())
    return h.hexdigest()[:16]


def source_digest(source: str) -> str:
    """The dump of source's syntax tree without docstrings (comments are not in the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def entry_path(cfg: Config, seed: int, stop_name: str = "budget") -> Path:
    """Where `trained(cfg, seed, stop_name=...)` keeps its network (whether or not it is there yet)."""
    return cache_dir() / cache_key(cfg, seed, stop_name) / "model.pt"


def read_entry(path: Path, model) -> Result | None:
    """The cached result at path, its weights loaded into model; None on a miss: no entry, one of
    another format or code, or a truncated one (said in one line on stderr)."""
    if not path.exists():
        return None
    try:
        entry = load_torch(path)
    except CorruptFile as e:
        print(f"circuits: {e}; training it again", file=sys.stderr, flush=True)
        return None
    if not _current(entry):
        return None
    try:
        model.load_state_dict(entry["model"])
        return Result(**entry["result"])
    except (KeyError, TypeError, RuntimeError) as e:
        print(f"circuits: {path} does not fit this model ({type(e).__name__}); training it again",
              file=sys.stderr, flush=True)
        return None


def trained(cfg: Config, seed: int, stop=None, stop_name: str = "budget", label: str | None = None,
            quiet: bool = False, live: Path | str | None = None) -> tuple[Trained, Path]:
    """The network `cfg` trains from `seed` until `stop` (named `stop_name`) or its budget, from the
    cache when it is there; returns it and its cache file. With `live`, a CSV there gets each
    evaluation row as it is computed (a run directory's live/ folder: readable while it trains)."""
    with torch_threads(cfg.train.threads):
        device = resolve_device(cfg.train.device)
        model, data = build(cfg, seed, device)
        key = cache_key(cfg, seed, stop_name)
        path = entry_path(cfg, seed, stop_name)
        folder = path.parent
        result = read_entry(path, model)
        if result is None:
            with locked(folder / ".lock", waiting=f"cache entry {folder} is being trained by {{holder}}; waiting for it"):
                result = read_entry(path, model)        # trained by the process we waited for
                if result is None:
                    result = from_other_cap(cfg, seed, stop_name, key, model, data, folder)
                if result is None:
                    result = _train_into(cfg, seed, stop, stop_name, key, model, data, folder, label, quiet, live)
        note_cap(cfg, seed, stop_name)
    return Trained(seed, model, data, result), path


def _train_into(cfg: Config, seed: int, stop, stop_name: str, key: str, model, data, folder: Path,
                label: str | None, quiet: bool, live: Path | str | None = None) -> Result:
    """Train into the cache folder (resuming its checkpoint) and write the entry."""
    bar = Bar(label or f"train {cfg.model.arch} seed {seed} ({stop_name}) into the cache", quiet=quiet)
    result = train(model, data, cfg.optim, cfg.train, stop=stop, checkpoint=folder / "checkpoint.pt",
                   progress=experiment.live_progress(bar, live), seed=seed, fingerprint_extra={"cache": key})
    bar.close()
    _write_entry(cfg, seed, stop_name, key, model, result, folder)
    return result


def _write_entry(cfg: Config, seed: int, stop_name: str, key: str, model, result: Result, folder: Path) -> None:
    write_json(folder / "config.json", {**to_dict(cfg), "seed": seed, "stop": stop_name})
    save_torch(folder / "model.pt", {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                     "result": dataclasses.asdict(result), "format": CACHE_FORMAT,
                                     "code": code_fingerprint(), "key": key})
    ck = folder / "checkpoint.pt"
    if ck.exists() and result.status == "done" and result.step == cfg.train.steps:
        ck.replace(folder / FINAL)          # it hit its cap: a larger cap continues from here (from_other_cap)
    else:
        ck.unlink(missing_ok=True)


def caps_index(cfg: Config, seed: int, stop_name: str) -> Path:
    """The JSON list of the step caps (train.steps) under which this run, all else equal, has
    finished in this cache."""
    fields = key_fields(cfg, seed, stop_name)
    fields["train"] = {k: v for k, v in fields["train"].items() if k != "steps"}
    return cache_dir() / "caps" / f"{config_hash(fields)}.json"


def known_caps(cfg: Config, seed: int, stop_name: str) -> list[int]:
    try:
        return [int(c) for c in read_json(caps_index(cfg, seed, stop_name))]
    except (OSError, ValueError, TypeError):
        return []                          # no index yet, or unreadable: no other cap is known


def note_cap(cfg: Config, seed: int, stop_name: str) -> None:
    """Add cfg's cap to the run's caps index (a lost concurrent update, or a read-only cache, only
    costs reuse across caps)."""
    caps = known_caps(cfg, seed, stop_name)
    if cfg.train.steps not in caps:
        with contextlib.suppress(OSError):
            write_json(caps_index(cfg, seed, stop_name), sorted({*caps, cfg.train.steps}))


def from_other_cap(cfg: Config, seed: int, stop_name: str, key: str, model, data, folder: Path) -> Result | None:
    """This run from the same run under another step cap, where that decides it (`other_caps`): a
    run that stopped by its rule within this cap is this run whole, written under this key too and
    returned. Else the final state of a run that hit a smaller cap becomes this run's checkpoint, so
    training continues from that cap instead of step 0; None: train."""
    whole, start = other_caps(cfg, seed, stop_name)
    if whole is not None:
        result = Result(**whole["result"])
        model.load_state_dict(whole["model"])
        _write_entry(cfg, seed, stop_name, key, model, result, folder)
        return result
    if start is not None and not (folder / "checkpoint.pt").exists():
        _continue_from(start, cfg, seed, stop_name, key, model, data, folder)
    return None


def other_caps(cfg: Config, seed: int, stop_name: str) -> tuple[dict | None, Config | None]:
    """What the same run under the other caps of its index decides of this one: (the entry of one
    that is this run whole, the config of the largest smaller cap to continue from); None where
    there is none. Training never reads its cap and the stop rule sees the same rows in the same
    order, so a run that stopped by its rule (or diverged) at an evaluation this cap also reaches
    is this run whole, and one that hit a smaller cap at an evaluation step, its final state
    (FINAL: weights, optimiser, generators) kept, is this run up to that cap."""
    steps, every = cfg.train.steps, cfg.train.eval_every
    start = None
    for cap in sorted(c for c in known_caps(cfg, seed, stop_name) if c != steps):
        other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=cap))
        path = entry_path(other, seed, stop_name)
        entry = _entry(path)
        if entry is None:
            continue
        result = Result(**entry["result"])
        if result.status in ("stopped", "diverged") and result.step <= steps and result.step % every == 0:
            return entry, None
        if result.status == "done" and result.step == cap < steps and cap % every == 0 and (path.parent / FINAL).exists():
            start = other
    return None, start


def steps_left(cfg: Config, seed: int, stop_name: str) -> int:
    """The steps this run still has to train at most (for a time bound): none when it is in the
    cache or another cap decides it, the rest after the cap it continues from, else its cap."""
    if entry_path(cfg, seed, stop_name).exists():
        return 0
    whole, start = other_caps(cfg, seed, stop_name)
    return 0 if whole is not None else cfg.train.steps - (start.train.steps if start is not None else 0)


def _entry(path: Path) -> dict | None:
    """The raw cache entry at path if it is one of this format and code (else None, quietly)."""
    try:
        entry = load_torch(path)
    except (OSError, CircuitsError):
        return None
    return entry if _current(entry) and "result" in entry and "model" in entry else None


def _current(entry) -> bool:
    """Is this loaded entry one of this entry format and training code?"""
    return isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT and entry.get("code") == code_fingerprint()


def _continue_from(other: Config, cfg: Config, seed: int, stop_name: str, key: str, model, data, folder: Path) -> None:
    """This run's checkpoint from the final state of the same run under the smaller cap of `other`."""
    cap, src = other.train.steps, entry_path(other, seed, stop_name).parent / FINAL
    fp = functools.partial(checkpoint_fingerprint, model, data, cfg.optim, seed=seed)
    continue_checkpoint(src, fp(other.train, [Phase(cap)], extra={"cache": src.parent.name}), cap,
                        folder / "checkpoint.pt", fp(cfg.train, [Phase(cfg.train.steps)], extra={"cache": key}),
                        f"{src.parent.name} from its {cap}-step cap to {cfg.train.steps} steps")


def continue_checkpoint(src: Path, src_fingerprint: str, cap: int, dst: Path, dst_fingerprint: str, said: str) -> bool:
    """Write at dst, as the checkpoint of a one-phase run under a larger cap, the final state at src
    of the same run that hit cap `cap` (an evaluation step), if src is whole and that run's (its
    fingerprint): circuits.train then resumes it at step `cap`, as an unbroken run would be there.
    Says `continuing {said}` on stderr; False (nothing written) where src cannot be used."""
    try:
        ck = load_torch(src)
    except (OSError, CircuitsError):
        return False
    if not isinstance(ck, dict) or ck.get("fingerprint") != src_fingerprint or ck.get("result", {}).get("step") != cap:
        return False
    ck["pos"] = {**ck["pos"], "phase": 0, "phase_step": cap}
    ck["fingerprint"] = dst_fingerprint
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_torch(dst, ck)
    print(f"circuits: continuing {said}", file=sys.stderr, flush=True)
    return True


def prestack(runs: list[tuple], bar: Bar | None = None, max_members: int = 64) -> int:
    """Train the runs (cfg, seed, stop, stop_name[, live: a CSV for its rows]) that can share a
    stacked model (circuits.stack: the GPU lever) as stacked groups, straight into their cache
    entries; `trained` then reads them back. A run already in the cache, part-trained (its
    checkpoint resumes on its own), decided or continued from another step cap (`other_caps`) or
    being trained by another process is left out, as is one stack_key refuses. Each entry's lock is
    held while its group trains; a killed group leaves the earlier groups' entries whole. A run's
    rows go to its live CSV once its group has trained (not as they come). Returns how many it trained."""
    from circuits import stack

    groups: dict = {}
    for cfg, seed, stop, name, *live in runs:
        key = cache_key(cfg, seed, name)
        folder, shape = cache_dir() / key, stack.stack_key(cfg)
        if shape is not None and not (folder / "model.pt").exists() and not (folder / "checkpoint.pt").exists() \
                and other_caps(cfg, seed, name) == (None, None):            # else read or continued by `trained`
            groups.setdefault(shape, []).append((cfg, seed, stop, name, folder, key, (live or [None])[0]))
    done, total = 0, sum(map(len, groups.values()))
    for members in groups.values():
        for i in range(0, len(members), max_members):
            with contextlib.ExitStack() as held:
                chunk = [m for m in members[i : i + max_members] if _hold(held, m[4] / ".lock")]
                chunk = [m for m in chunk if not (m[4] / "model.pt").exists()]     # finished while we looked
                if not chunk:
                    continue
                device = resolve_device(chunk[0][0].train.device)
                with torch_threads(chunk[0][0].train.threads):
                    built = [build(cfg, seed, device) for cfg, seed, *_ in chunk]
                    results = stack.train_stacked([m for m, _ in built], [d for _, d in built], [m[0] for m in chunk],
                                                  [m[2] for m in chunk], device)
                for (cfg, seed, _, name, folder, key, live), (model, _), result in zip(chunk, built, results):
                    _write_entry(cfg, seed, name, key, model, result, folder)
                    if live:
                        rows = experiment.LiveMetrics(Path(live))
                        for row in result.history:
                            rows.add(row)
                done += len(chunk)
            if bar is not None:
                bar(done, total)
    return done


def _hold(held: contextlib.ExitStack, lock: Path) -> bool:
    """Take the lock into `held` if no other process has it (else False: that process trains the entry)."""
    try:
        held.enter_context(locked(lock, wait=False))
        return True
    except CircuitsError:
        return False
