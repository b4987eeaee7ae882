"""Backend benchmark: the ``aa4`` engine against an older aa4xr, side by side in one run.

    python benchmarks/backend.py                                  # one animal, this checkout only
    git worktree add /tmp/wt-old <commit>                          # then, to compare with older code:
    python benchmarks/backend.py --old /tmp/wt-old                 # both, same corpus and store
    python benchmarks/backend.py --size full --old /tmp/wt-old     # the full-size corpus
    python benchmarks/backend.py --root /tmp/corpora/full-lead --targets --old /tmp/wt-old
                                  # issue 12's full-corpus figures against their targets

Each stage runs in a fresh subprocess (peak memory = that process) with
the code tree on ``PYTHONPATH`` and one shared store (warm opens); the
libraries (aa4xr, xarray, dask.array, and distributed, which dask imports
on a process's first compute) are imported before the clock, and
each line notes the 1-minute load average when its stage ended (the
machine may be shared). All at ``dt=1 ms``, ``spectrogram=False``, every
sort type:

open          warm ``open_aa4``
neuron_psth   one neuron's PSTH over all its stimuli (the neuron with most trials), after the open:
              ``aa4xr.psth(..., smooth_ms=None)``, the toolkit's PSTH (averaged from the store's rows)
neuron_mean   the same through plain xarray: ``(spike_count.mean("trial") / dt)``, binned through dask
all_psth      every neuron's PSTH, after the open, as ``neuron_psth``
all_mean      the same through plain xarray, as ``neuron_mean``
stim_psth     one stimulus's population PSTH (the most heard), after the open, as ``neuron_psth``
stim_mean     the same through plain xarray, as ``neuron_mean``
bin_all       ``ds.spike_count.sum().compute()``: binning everything, after the open
load          ``ds.spike_count.load()``: time and peak memory against the dense size
load_nodask   ``ds.load()`` of ``open_aa4(..., chunks=None)``, lazily indexed without dask (new code only)
graph         bytes of the pickled dask graph of ``ds.spike_count.sum()`` (what a scheduler receives)
psth, response_strength, reliability
              ``aa4xr.<name>(ds).compute()`` at 5 ms: the memory it adds (peak minus before)
              against the dense size of ``spike_count``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest import corpus_root  # noqa: E402


def _open(root: Path, dt: float = 0.001):
    import aa4xr

    return aa4xr.open_aa4(root, dt=dt, sort_types=None, spectrogram=False)


def _timed(work):
    """(open seconds, work seconds, result) of ``work(ds)`` after a warm open."""
    def stage(root: Path) -> dict:
        t0 = time.perf_counter()
        ds = _open(root)
        t1 = time.perf_counter()
        result = work(ds)
        return {"open_s": t1 - t0, "work_s": time.perf_counter() - t1, "result": result}
    return stage


def _most_heard_neuron(ds):
    import numpy as np

    return str(ds.neuron.values[int(np.argmax(ds.n_trials.sum("stim").values))])


def _heard_by_one(ds):
    """The neuron with most trials, over the stimuli it heard."""
    one = ds.sel(neuron=[_most_heard_neuron(ds)])
    return one.isel(stim=(one.n_trials > 0).any("neuron").values)


def _most_heard_stim(ds):
    import numpy as np

    return ds.sel(stim=[ds.stim.values[int(np.argmax(ds.n_trials.sum("neuron").values))]])


def neuron_psth(ds) -> float:
    import aa4xr

    return float(aa4xr.psth(_heard_by_one(ds), smooth_ms=None).sum().compute())


def neuron_mean(ds) -> float:
    return float((_heard_by_one(ds).spike_count.mean("trial") / ds.dt).sum().compute())


def all_psth(ds) -> float:
    import aa4xr

    return float(aa4xr.psth(ds, smooth_ms=None).sum().compute())


def all_mean(ds) -> float:
    return float((ds.spike_count.mean("trial") / ds.dt).sum().compute())


def stim_psth(ds) -> float:
    import aa4xr

    return float(aa4xr.psth(_most_heard_stim(ds), smooth_ms=None).sum().compute())


def stim_mean(ds) -> float:
    return float((_most_heard_stim(ds).spike_count.mean("trial") / ds.dt).sum().compute())


def bin_all(ds) -> float:
    return float(ds.spike_count.sum().compute())


def load(ds) -> dict:
    dense = ds.spike_count.nbytes
    ds.spike_count.load()
    return {"dense_mb": dense / 2**20}


def load_nodask(root: Path) -> dict:
    import aa4xr

    t0 = time.perf_counter()
    ds = aa4xr.open_aa4(root, dt=0.001, sort_types=None, spectrogram=False, chunks=None)
    t1 = time.perf_counter()
    dense = ds.spike_count.nbytes
    ds.load()
    return {"open_s": t1 - t0, "work_s": time.perf_counter() - t1, "result": {"dense_mb": dense / 2**20}}


def graph(ds) -> dict:
    total = ds.spike_count.sum()
    return {"graph_mb": len(pickle.dumps(dict(total.__dask_graph__()))) / 2**20,
            "chunks": ds.spike_count.data.npartitions}


def _analysis(name: str, dt: float = 0.005):
    """``aa4xr.<name>(ds).compute()``: time, and the memory it adds (peak minus before) against the dense size."""
    def stage(root: Path) -> dict:
        import psutil

        import aa4xr

        ds = _open(root, dt=dt)
        before = psutil.Process().memory_info().rss / 2**20
        t0 = time.perf_counter()
        getattr(aa4xr, name)(ds).compute()
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"open_s": 0.0, "work_s": seconds,
                "result": {"dense_mb": ds.spike_count.nbytes / 2**20, "added_mb": peak - before}}
    return stage


STAGES = {"open": _timed(lambda ds: ds.sizes["neuron"]), "neuron_psth": _timed(neuron_psth),
          "neuron_mean": _timed(neuron_mean), "all_psth": _timed(all_psth), "all_mean": _timed(all_mean), "stim_psth": _timed(stim_psth),
          "stim_mean": _timed(stim_mean), "bin_all": _timed(bin_all),
          "load": _timed(load), "load_nodask": load_nodask,
          "graph": _timed(graph), **{name: _analysis(name) for name in ("psth", "response_strength", "reliability")}}


#: Issue 12's targets on the full corpus: (stage, figure, limit, what).
TARGETS = (("open", "open_s", 0.5, "warm open, s"), ("neuron_psth", "work_s", 0.1, "one neuron's PSTH, s"),
           ("stim_psth", "work_s", 0.2, "one stimulus's population PSTH, s"), ("bin_all", "work_s", 40.0,
           "binning everything, s"), ("graph", "graph_mb", 5.0, "pickled graph of spike_count.sum(), MB"))


def measure(stage: str, root: Path) -> None:
    import importlib.util

    import dask.array  # noqa: F401  (library imports are not the stages' work)
    import xarray  # noqa: F401

    if importlib.util.find_spec("distributed"):  # dask imports it on a process's first compute
        import distributed  # noqa: F401

    import aa4xr
    import aa4xr.analysis  # noqa: F401  (imported on a first aa4xr.psth: scipy's imports are not the stage's work)
    import aa4xr.dataset  # noqa: F401  (imported on a first open_aa4; the module's import is not the stage's work)

    out = STAGES[stage](root)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load"] = os.getloadavg()[0]
    out["code"] = str(Path(aa4xr.__file__).parent.parent)
    print(json.dumps(out))


def run(stage: str, root: Path, cache: Path, code: Path) -> dict:
    env = {**os.environ, "AA4XR_CACHE_DIR": str(cache), "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--stage", stage, "--root", str(root)],
                         env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["code"]).resolve() == code.resolve(), f"{stage} ran {result['code']}, not {code}"
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="animal", choices=["animal", "full"])
    p.add_argument("--root", type=Path, help="an existing corpus (default: write one under /tmp)")
    p.add_argument("--old", type=Path, help="a checkout of older aa4xr code to compare with")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--targets", action="store_true", help="only the stages with a target; print them against it")
    p.add_argument("--stage", choices=list(STAGES))
    args = p.parse_args()
    if args.stage:
        measure(args.stage, args.root)
        return
    root = corpus_root(args.root, args.size)
    stages = [t[0] for t in TARGETS] if args.targets else args.stages
    cache = Path(os.environ.get("AA4XR_CACHE_DIR") or tempfile.mkdtemp(prefix="aa4xr-bench-cache-"))
    codes = {"new": Path(__file__).resolve().parent.parent, **({"old": args.old} if args.old else {})}
    for code in codes.values():  # ingest (once per store format), outside the figures
        run("open", root, cache, code)
    print(f"corpus: {root}; {os.cpu_count()} cores; code: {', '.join(f'{k}={v}' for k, v in codes.items())}")
    print(f"{'stage':<14}" + "".join(f"{k + ' open s':>12}{k + ' work s':>12}{k + ' peak MB':>12}" for k in codes)
          + f"{'old/new':>9}  notes")
    results = {}
    for stage in stages:
        res = results[stage] = {k: run(stage, root, cache, code) for k, code in codes.items()
                                if k == "new" or stage != "load_nodask"}
        line = f"{stage:<14}" + "".join(f"{r['open_s']:>12.2f}{r['work_s']:>12.2f}{r['peak_mb']:>12.0f}"
                                        if r else f"{'-':>12}" * 3 for r in (res.get(k) for k in codes))
        if "old" in res:
            key = "open_s" if stage == "open" else "work_s"
            line += f"{res['old'][key] / max(res['new'][key], 1e-9):>9.1f}"
        else:
            line += f"{'':>9}"
        notes = []
        for k, r in res.items():
            result = r["result"]
            if isinstance(result, dict) and "added_mb" in result:
                notes.append(f"{k}: added/dense {result['added_mb'] / result['dense_mb']:.2f} "
                             f"(dense {result['dense_mb']:.0f} MB)")
            elif isinstance(result, dict) and "dense_mb" in result:
                notes.append(f"{k}: peak/dense {r['peak_mb'] / result['dense_mb']:.2f} "
                             f"(dense {result['dense_mb']:.0f} MB)")
            if isinstance(result, dict) and "graph_mb" in result:
                notes.append(f"{k}: graph {result['graph_mb']:.2f} MB, {result['chunks']} chunks")
        notes.append("load " + "/".join(f"{r['load']:.1f}" for r in res.values()))
        print(line + "  " + "; ".join(notes), flush=True)
    if args.targets:
        print(f"{'target':<42}" + "".join(f"{k:>10}" for k in codes) + f"{'limit':>10}  met (new)")
        for stage, figure, limit, what in TARGETS:
            values = [_figure(results[stage][k], figure) for k in codes]
            print(f"{what:<42}" + "".join(f"{v:>10.3f}" for v in values) + f"{limit:>10g}  "
                  f"{'yes' if values[0] <= limit else 'NO'}")


def _figure(result: dict, figure: str) -> float:
    """A stage's figure: a time of the stage, or a value its work returned (e.g. ``graph_mb``)."""
    inner = result["result"]
    return inner[figure] if isinstance(inner, dict) and figure in inner else result[figure]


if __name__ == "__main__":
    main()
