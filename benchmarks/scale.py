"""Full-size benchmark: ingest, warm open, PSTHs, export, side by side in one run.

    python benchmarks/scale.py --root /path/to/full/corpus    # or it writes one (~3 GB, once)
    python benchmarks/scale.py --size animal                  # the same on one animal

Stages run in subprocesses (peak memory = the process and its workers) in
one run and print one table: the ingest baselines and aa4xr's cold open
(from ``ingest.py``), then with the store in place: warm open at 1 ms, one
neuron's PSTH over all its stimuli at 1 ms, one stimulus's population PSTH at
1 ms, and export of the whole Dataset at 5 ms to netCDF (time, file size).

Issue 12's full-corpus targets (warm open, one neuron's and one stimulus's
PSTH, binning everything, the pickled graph) against an older checkout, in
one run, with the load average of each stage::

    python benchmarks/backend.py --root /path/to/full/corpus --targets --old /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest import corpus_root, measure, run_stage, store_size  # noqa: E402


def _open(root: Path, dt: float = 0.001):
    import aa4xr

    return aa4xr.open_aa4(root, dt=dt, sort_types=None, spectrogram=False)


def neuron_psth(root: Path) -> float:
    ds = _open(root)
    heard = ds.n_trials.sum("stim")
    neuron = ds.neuron[int(np.argmax(heard.values))]
    one = ds.sel(neuron=neuron)
    one = one.isel(stim=(one.n_trials > 0).values)
    return float((one.spike_count.mean("trial") / ds.dt).sum().compute())


def stim_psth(root: Path) -> float:
    ds = _open(root)
    stim = ds.stim[int(np.argmax(ds.n_trials.sum("neuron").values))]
    return float((ds.spike_count.sel(stim=stim).mean("trial") / ds.dt).sum().compute())


def export(root: Path) -> dict:
    ds = _open(root, dt=0.005)
    path = Path(tempfile.gettempdir()) / f"aa4xr-export-{os.getpid()}.nc"
    try:
        ds.to_netcdf(path)
        return {"bytes": path.stat().st_size, "dense_bytes": int(ds.spike_count.nbytes)}
    finally:
        path.unlink(missing_ok=True)


STAGES = {"neuron_psth": neuron_psth, "stim_psth": stim_psth, "export": export}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="full", choices=["animal", "full"])
    p.add_argument("--root", type=Path)
    p.add_argument("--skip-baselines", action="store_true", help="skip (a) and (b), the slow ones")
    p.add_argument("--stage", choices=list(STAGES))
    args = p.parse_args()
    if args.stage:
        measure(STAGES[args.stage], args.root)
        return
    root = corpus_root(args.root, args.size)
    cache = Path(tempfile.mkdtemp(prefix="aa4xr-scale-cache-"))
    n_files = len(list(root.glob("*/*.h5")))
    print(f"corpus: {root} ({n_files} unit files), {os.cpu_count()} cores")
    ingest_stages = (["floor", "loop"] if not args.skip_baselines else []) + ["cold", "warm", "warm_bin"]
    res = {s: run_stage(s, root, cache) for s in ingest_stages}
    res.update({s: run_stage(s, root, cache, script=__file__) for s in STAGES})
    labels = {"floor": "(a) floor: low-level h5py, spike_times only",
              "loop": "(b) per-trial h5py loop + histogram, 1 ms",
              "cold": "(c) aa4xr cold open + bin all at 1 ms",
              "warm": "(d) aa4xr warm open, 1 ms",
              "warm_bin": "(e) warm open + bin all at 1 ms",
              "neuron_psth": "one neuron's PSTH, all its stimuli, 1 ms",
              "stim_psth": "one stimulus's population PSTH, 1 ms",
              "export": "export whole Dataset at 5 ms to netCDF"}
    base = res.get("floor", {}).get("seconds")
    print(f"{'stage':<46}{'seconds':>9}{'x floor':>9}{'peak MB':>9}")
    for stage, label in labels.items():
        if stage in res:
            r = res[stage]
            ratio = f"{r['seconds'] / base:>9.2f}" if base else f"{'':>9}"
            print(f"{label:<46}{r['seconds']:>9.2f}{ratio}{r['peak_mb']:>9.0f}")
    if "loop" in res:
        print(f"cold vs per-trial loop: {res['loop']['seconds'] / res['cold']['seconds']:.1f}x faster")
    store_mb = store_size(cache) / 2**20
    print(f"store: {store_mb:.0f} MB; peak memory of (e) / store: {res['warm_bin']['peak_mb'] / store_mb:.2f}x")
    e = res["export"]["result"]
    print(f"export: {e['bytes'] / 2**20:.0f} MB on disk for {e['dense_bytes'] / 2**20:.0f} MB dense float32 "
          f"(zlib 1 + shuffle, chunks of 1 stim x 64 neurons x all trials x all bins)")


if __name__ == "__main__":
    main()
