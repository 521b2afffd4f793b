"""Keep a long run's work across sessions (a machine whose cache does not survive): copy from one
trained-circuit cache to another folder the finished networks (`<key>/model.pt` with its
config.json), the finished subset runs' records (`ungrok/<key>/history.json`) and the step caps
each run finished under (`ungrok/caps/`, `caps/`: merged with the destination's); with
`--unfinished`, also the checkpoints of runs still training (`checkpoint.pt`: weights, optimiser
state and history, megabytes each), so a run cut off with its session resumes where it was, and
the final states of networks that hit their step cap (`<key>/final.pt`, as big), from which a
larger cap continues (circuits/cache.py from_other_cap).

    python figures/keep_runs.py /work/p113/cache figures/kept/p113      # keep (then commit)
    python figures/keep_runs.py --unfinished --prune /work/p113/cache figures/kept/p113   # at a session's end
    python figures/keep_runs.py --unfinished figures/kept/p113 /work/p113/cache   # restore, then rerun

A checkpoint is copied only while its run is unfinished on both sides: a kept checkpoint of a run
that has since finished is never restored (the run's network or record is read instead), and
`--prune` deletes such checkpoints from the destination (for a kept folder; not for a cache, where
a finished subset run's checkpoint holds its final weights). A restored checkpoint is resumed only
by the run that wrote it (its fingerprint names optimiser, steps, seed and data;
circuits/train.py read_checkpoint), and loaded without pickle code. A restored cache is read only
by the code version that wrote it: its keys hold a fingerprint of the trainer's source
(circuits.cache.code_fingerprint), so run with that commit's code.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

KEEP = ("*/model.pt", "*/config.json", "ungrok/*/history.json")
CHECKPOINTS = ("*/checkpoint.pt", "ungrok/*/checkpoint.pt")
CAPS = ("ungrok/caps/*.json", "caps/*.json")   # the caps each run finished under (merged, never overwritten)
FINAL_STATES = "*/final.pt"      # a capped network's last state (with --unfinished; never pruned)


def finished(run_dir: Path) -> bool:
    """Whether the run in this cache folder has finished (a network's model.pt, a subset run's record)."""
    return (run_dir / "model.pt").exists() or (run_dir / "history.json").exists()


def _copy(f: Path, to: Path, newer_only: bool = False) -> bool:
    """Copy f to `to` atomically (a copy, then a rename) unless it holds the same bytes already (or,
    with newer_only, `to` was written after f: a checkpoint further on than f)."""
    if to.exists() and to.stat().st_size == f.stat().st_size and to.read_bytes() == f.read_bytes():
        return False
    if newer_only and to.exists() and to.stat().st_mtime >= f.stat().st_mtime:
        return False
    _atomic(to, lambda tmp: shutil.copyfile(f, tmp))
    return True


def _atomic(to: Path, fill) -> None:
    """Write `to` through a temp file beside it (fill(tmp) writes it), then a rename."""
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.tmp")
    fill(tmp)
    tmp.replace(to)


def _merge_caps(f: Path, to: Path) -> bool:
    """Write to `to` the union of the step caps listed in f and in `to` (a JSON list each), atomically;
    False if `to` lists them all already. An unreadable list counts as empty."""
    def caps(path: Path) -> set[int]:
        try:
            return {int(c) for c in json.loads(path.read_text())}
        except (OSError, ValueError, TypeError):
            return set()
    have, union = caps(to), caps(f) | caps(to)
    if to.exists() and have == union:
        return False
    _atomic(to, lambda tmp: tmp.write_text(json.dumps(sorted(union)) + "\n"))
    return True


def keep(src: Path, dst: Path, unfinished: bool = False, prune: bool = False) -> list[Path]:
    """Copy every KEEP file of src to the same place under dst; with unfinished, also the final states
    and the checkpoints of runs unfinished in src and in dst; with prune, delete dst's checkpoints of runs finished in
    dst. The files copied."""
    copied = [dst / f.relative_to(src) for pattern in KEEP for f in sorted(src.glob(pattern))
              if _copy(f, dst / f.relative_to(src))]
    copied += [dst / f.relative_to(src) for pattern in CAPS for f in sorted(src.glob(pattern))
               if _merge_caps(f, dst / f.relative_to(src))]
    if unfinished:
        copied += [dst / f.relative_to(src) for f in sorted(src.glob(FINAL_STATES)) if _copy(f, dst / f.relative_to(src))]
        copied += [dst / f.relative_to(src) for pattern in CHECKPOINTS for f in sorted(src.glob(pattern))
                   if not finished(f.parent) and not finished(dst / f.parent.relative_to(src))
                   and _copy(f, dst / f.relative_to(src), newer_only=True)]
    if prune:
        for f in [f for pattern in CHECKPOINTS for f in dst.glob(pattern) if finished(f.parent)]:
            f.unlink()
    return copied


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--unfinished", action="store_true", help="also copy the checkpoints of runs still training")
    ap.add_argument("--prune", action="store_true", help="delete DST's checkpoints of runs finished in DST (a kept folder)")
    a = ap.parse_args()
    if not a.src.is_dir():
        raise SystemExit(f"keep_runs: {a.src} is not a folder")
    copied = keep(a.src, a.dst, a.unfinished, a.prune)
    print(f"{len(copied)} files copied to {a.dst}")


if __name__ == "__main__":
    main()
