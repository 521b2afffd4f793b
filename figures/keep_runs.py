"""Keep a long run's finished work across sessions (a machine whose cache does not survive): copy
from one trained-circuit cache to another folder the finished networks (`<key>/model.pt` with its
config.json) and the finished subset runs' records (`ungrok/<key>/history.json`), never the
checkpoints of unfinished runs (their weights and optimiser state: megabytes each).

    python figures/keep_runs.py /work/p113/cache figures/kept/p113      # keep (then commit)
    python figures/keep_runs.py figures/kept/p113 /work/p113/cache      # restore, then rerun the command

A restored cache is read only by the code version that wrote it: its keys hold a fingerprint of the
trainer's source (circuits.cache.code_fingerprint), so run with that commit's code.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

KEEP = ("*/model.pt", "*/config.json", "ungrok/*/history.json")


def keep(src: Path, dst: Path) -> list[Path]:
    """Copy every KEEP file of src to the same place under dst (atomically: a copy, then a rename);
    the files copied."""
    copied = []
    for pattern in KEEP:
        for f in sorted(src.glob(pattern)):
            to = dst / f.relative_to(src)
            if to.exists() and to.stat().st_size == f.stat().st_size and to.read_bytes() == f.read_bytes():
                continue
            to.parent.mkdir(parents=True, exist_ok=True)
            tmp = to.with_name(f".{to.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(to)
            copied.append(to)
    return copied


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    if not a.src.is_dir():
        raise SystemExit(f"keep_runs: {a.src} is not a folder")
    copied = keep(a.src, a.dst)
    print(f"{len(copied)} files copied to {a.dst}")


if __name__ == "__main__":
    main()
