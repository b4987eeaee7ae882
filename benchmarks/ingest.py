"""Ingest benchmark: aa4xr's cold and warm open against two baselines, side by side.

    python benchmarks/ingest.py                 # one animal, LblBlu2028M size (~73,000 trials)
    python benchmarks/ingest.py --size full     # 6 animals, ~1.8 M trials (writes ~GBs once)

Each stage runs in its own subprocess (peak memory = that process and its
workers), in one run, and the table prints times and ratios:

(a) floor: every ``spike_times`` dataset read with h5py's low-level API, one process;
(b) per-trial loop: high-level h5py access and one histogram per trial at 1 ms;
(c) aa4xr cold: empty cache, ``open_aa4(dt=0.001)`` and binning every chunk,
    unit files read by the direct reader (:mod:`aa4xr.h5direct`);
(c') the same through h5py (``AA4XR_READER=h5py``), into its own empty cache;
(d) aa4xr warm: ``open_aa4`` again with the store in place;
(e) aa4xr warm + binning everything at 1 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def unit_files(root: Path) -> list[Path]:
    """The unit files aa4xr reads (not ``Old_Units*.h5`` and other ``.h5`` files)."""
    from aa4xr.layout import UNIT_NAME

    return [path for path in sorted(root.glob("*/*.h5")) if UNIT_NAME.match(path.stem)]


def floor(root: Path) -> int:
    import h5py

    n = 0
    for path in unit_files(root):
        fid = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY)
        top = h5py.h5g.open(fid, b"/")
        for protocol in top:
            if protocol in (b"class_info", b"extra_info"):
                continue
            pg = h5py.h5g.open(top, protocol)
            for stim in pg:
                sg = h5py.h5g.open(pg, stim)
                for trial in sg:
                    d = h5py.h5d.open(h5py.h5g.open(sg, trial), b"spike_times")
                    buf = np.empty(d.shape, "f8")
                    d.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
                    n += buf.size
        fid.close()
    return n


def per_trial_loop(root: Path) -> int:
    import h5py

    edges = np.arange(0, 5.001, 0.001) - 1.0
    n = 0
    for path in unit_files(root):
        with h5py.File(path, "r") as f:
            for protocol in f:
                if protocol in ("class_info", "extra_info"):
                    continue
                for stim in f[protocol]:
                    for trial in f[protocol][stim]:
                        times = f[protocol][stim][trial]["spike_times"][()]
                        n += int(np.histogram(np.ravel(times), edges)[0].sum())
    return n


def cold(root: Path) -> float:
    import aa4xr

    ds = aa4xr.open_aa4(root, dt=0.001, sort_types=None, spectrogram=False)
    return float(ds.spike_count.sum().compute())


def warm(root: Path) -> int:
    import aa4xr

    return aa4xr.open_aa4(root, dt=0.001, sort_types=None, spectrogram=False).sizes["neuron"]


STAGES = {"floor": floor, "loop": per_trial_loop, "cold": cold, "cold_h5py": cold, "warm": warm, "warm_bin": cold}
#: The reader each stage's aa4xr uses (``$AA4XR_READER``).
READER = {"cold_h5py": "h5py"}


def measure(func, root: Path) -> None:
    """Run one stage in this process; print its time, peak memory and result as JSON.

    Imports happen before the clock starts: stages time work, not interpreter start-up.
    """
    import aa4xr  # noqa: F401

    t0 = time.perf_counter()
    result = func(root)
    seconds = time.perf_counter() - t0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": rss, "result": result}))


def run_stage(stage: str, root: Path, cache: Path, script: str = __file__) -> dict:
    """Run ``script --stage stage`` in a fresh process with ``cache`` as the aa4xr cache."""
    env = {**os.environ, "AA4XR_CACHE_DIR": str(cache), "AA4XR_READER": READER.get(stage, "direct")}
    out = subprocess.run([sys.executable, script, "--stage", stage, "--root", str(root)],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def store_size(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.glob("stores/*.nc"))


def corpus_root(root: Path | None, size: str) -> Path:
    """``root``, or a synthetic corpus of ``size`` under /tmp, written once."""
    root = root or Path(tempfile.gettempdir()) / f"aa4xr-bench-{size}"
    if not root.exists():
        from aa4xr.synthetic import write_corpus

        t0 = time.perf_counter()
        write_corpus(root, size, seed=1, progress=True)
        print(f"wrote {size} corpus to {root} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="animal", choices=["animal", "full"])
    p.add_argument("--root", type=Path, help="an existing corpus (default: write one under /tmp)")
    p.add_argument("--stage", choices=list(STAGES))
    args = p.parse_args()
    if args.stage:
        measure(STAGES[args.stage], args.root)
        return
    root = corpus_root(args.root, args.size)
    cache = Path(tempfile.mkdtemp(prefix="aa4xr-bench-cache-"))
    n_files = len(unit_files(root))
    print(f"corpus: {root} ({n_files} unit files), {os.cpu_count()} cores")
    res = {s: run_stage(s, root, cache) for s in ("floor", "loop", "cold", "warm", "warm_bin")}
    res["cold_h5py"] = run_stage("cold_h5py", root, Path(tempfile.mkdtemp(prefix="aa4xr-bench-cache-")))
    base = res["floor"]["seconds"]
    print(f"{'stage':<44}{'seconds':>9}{'x floor':>9}{'peak MB':>9}")
    labels = {"floor": "(a) floor: low-level h5py, spike_times only",
              "loop": "(b) per-trial h5py loop + histogram, 1 ms",
              "cold": "(c) aa4xr cold open + bin all at 1 ms",
              "cold_h5py": "(c') the same, h5py reader",
              "warm": "(d) aa4xr warm open",
              "warm_bin": "(e) aa4xr warm open + bin all at 1 ms"}
    for stage, label in labels.items():
        r = res[stage]
        print(f"{label:<44}{r['seconds']:>9.2f}{r['seconds'] / base:>9.2f}{r['peak_mb']:>9.0f}")
    print(f"cold vs per-trial loop: {res['loop']['seconds'] / res['cold']['seconds']:.1f}x faster; "
          f"direct reader vs h5py reader, cold: {res['cold_h5py']['seconds'] / res['cold']['seconds']:.1f}x faster")
    print(f"store size: {store_size(cache) / 2**20:.0f} MB; peak memory of (e) / store: "
          f"{res['warm_bin']['peak_mb'] / (store_size(cache) / 2**20):.1f}x")
    assert res["floor"]["result"] >= 0 and res["cold"]["result"] == res["cold_h5py"]["result"]


if __name__ == "__main__":
    main()
