"""Torch epoch benchmark: peak memory of one epoch of ``aa4xr.torch.TorchDataset``.

    python benchmarks/torch_epoch.py                  # one animal (the default corpus size)
    python benchmarks/torch_epoch.py --size full      # 6 animals, ~1,350 units, at 5 ms

Each stage runs in its own subprocess (peak memory = that process and its
DataLoader workers), and the table compares the epoch's peak memory with
the dense size of ``spike_count`` (what materialising the Dataset costs)
and with the largest batch (what any loader must hold). Needs psutil
(the ``test`` extra).

(a) ingest: the first ``open_aa4`` of the corpus (writes the spike-time store);
(b) open: ``open_aa4`` again from the store, nothing iterated;
(c) epoch: (b) then every batch of a ``DataLoader(TorchDataset(ds), collate_fn=collate)``;
(d) epoch, one animal: the same over ``ds.sel(animal=<the first animal>)``.

With ``--items`` it prints items/s instead: one epoch over the first animal
of a ``DataLoader(TorchDataset(ds), batch_size=8, collate_fn=collate)`` on
the lazy Dataset and on ``ds.load()``, against a baseline that does what a
hand-written loader does (per-stimulus tensors built once, indexed per
item), at 5 ms and 1 ms (``--old <checkout>`` adds an older aa4xr); the
fastest of 3 to 10 epochs after an untimed one, loaded and baseline
interleaved in alternating order.

For each epoch it also prints its time against one pass computing every
``spike_count`` chunk once: items read whole chunks, so the ratio shows
how many stimuli share a chunk (``open_aa4(chunk_mb=...)``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _open(root: Path, dt: float, chunk_mb: float = 32.0):
    import aa4xr

    return aa4xr.open_aa4(root, sort_types=None, dt=dt, pre=0.1, post=0.1, chunk_mb=chunk_mb)


def ingest(root: Path, dt: float, **_) -> dict:
    return {"dense_mb": _open(root, dt)["spike_count"].nbytes / 2**20}


def open_only(root: Path, dt: float, **_) -> dict:
    return {"neurons": _open(root, dt).sizes["neuron"]}


def epoch(root: Path, dt: float, batch_size: int, num_workers: int, chunk_mb: float,
          one_animal: bool = False) -> dict:
    import torch

    from aa4xr.torch import TorchDataset, collate

    ds = _open(root, dt, chunk_mb)
    if one_animal:
        ds = ds.sel(animal=ds["animal"].values[0])
    tds = TorchDataset(ds)
    loader = torch.utils.data.DataLoader(tds, batch_size=batch_size, collate_fn=collate,
                                         num_workers=num_workers)
    before = _rss_mb()                                   # torch imported, Dataset opened
    t0, largest, recorded = time.perf_counter(), 0, 0
    with _PeakSampler() as sampler:
        for batch in loader:
            largest = max(largest, sum(batch[k].nbytes for k in ("stimulus", "response", "mask")))
            recorded += int(batch["mask"].sum())
    seconds, peak = time.perf_counter() - t0, sampler.peak_mb
    t0 = time.perf_counter()
    assert recorded == int(ds["spike_count"].sel(stim=tds.stims).notnull().sum()), "the epoch lost data"
    return {"items": len(tds), "epoch_s": seconds, "one_pass_s": time.perf_counter() - t0,
            "before_mb": before, "epoch_peak_mb": peak, "dense_mb": ds["spike_count"].nbytes / 2**20,
            "batch_mb": largest / 2**20}


def epoch_one_animal(**kwargs) -> dict:
    return epoch(**kwargs, one_animal=True)


def _rss_mb() -> float:
    """Resident memory now, of this process and its children (DataLoader workers)."""
    import psutil

    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 2**20


class _PeakSampler:
    """Peak of :func:`_rss_mb` while the ``with`` block runs, sampled every 5 ms."""

    def __enter__(self) -> _PeakSampler:
        self.peak_mb, self._done = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak_mb = max(self.peak_mb, _rss_mb())


def _peak_mb() -> float:
    """Peak resident memory of this process plus its (finished) DataLoader workers."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


class Prebuilt:
    """The baseline: what a hand-written loader does, per-stimulus tensors built once and indexed per item."""

    def __init__(self, tds) -> None:
        import torch

        self.items = []
        for i in range(len(tds)):
            item = tds[i]
            self.items.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def items_per_second(root: Path, dt: float, batch_size: int, chunk_mb: float, how: str, **_) -> dict:
    """Items/s of the fastest epoch of ``DataLoader(..., batch_size, collate_fn=collate)`` over one animal.

    ``how``: "lazy" (TorchDataset on the lazy Dataset) or "loaded" (on
    ``ds.load()``, with the baseline's epochs, :class:`Prebuilt` tensors of
    the same items, interleaved with its own so that both see the same
    machine). A model sees hundreds of epochs, and a shared machine adds
    noise: the fastest of at least 3 epochs each, more (up to 10) while
    they take under 2 s in all.

    Each runs one untimed epoch first: the process's first epoch pays
    for the process (at 1 ms it took 0.6-1.1 s against 0.43 s after,
    whichever of loaded and baseline ran it), which otherwise always
    landed on the one run first. The order alternates too, round by round.
    """
    import torch

    from aa4xr.torch import TorchDataset, collate

    import aa4xr

    ds = aa4xr.open_aa4(root, sort_types=None, dt=dt, pre=0.1, post=0.1, chunk_mb=chunk_mb)
    ds = ds.sel(animal=ds["animal"].values[0])
    if how == "loaded":
        ds = ds.load()
    tds = TorchDataset(ds)
    datasets = {how: tds, **({"baseline": Prebuilt(tds)} if how == "loaded" else {})}

    def one_epoch(data) -> tuple[int, float]:
        t0, n = time.perf_counter(), 0
        for batch in torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate):
            n += batch["response"].shape[0]
        return n, time.perf_counter() - t0

    first = {name: one_epoch(data)[1] for name, data in datasets.items()}
    times: dict[str, list[float]] = {name: [] for name in datasets}
    order = list(datasets)
    while len(times[how]) < 3 or (sum(map(sum, times.values())) < 2.0 and len(times[how]) < 10):
        for name in order:
            n, seconds = one_epoch(datasets[name])
            times[name].append(seconds)
        order.reverse()
    return {"items": n, "epoch_s": min(times[how]), "first_epoch_s": first[how],
            **{f"{name}_items_per_s": n / min(t) for name, t in times.items()}}


STAGES = {"ingest": ingest, "open": open_only, "epoch": epoch, "epoch_animal": epoch_one_animal,
          **{f"items_{how}": (lambda how: lambda **kw: items_per_second(how=how, **kw))(how)
             for how in ("lazy", "loaded")}}


def items_table(args: argparse.Namespace) -> None:
    """Items/s side by side: lazy, loaded and the prebuilt baseline (and an older checkout), at 5 and 1 ms."""
    cache = Path(os.environ.get("AA4XR_CACHE_DIR") or tempfile.mkdtemp(prefix="aa4xr-bench-cache-"))
    codes = {"new": Path(__file__).resolve().parent.parent, **({"old": args.old} if args.old else {})}
    print(f"corpus: {args.root} (first animal), batch_size={args.batch_size}, num_workers=0; "
          f"items/s of an epoch (the fastest of 3 to 10, after an untimed one); load average {os.getloadavg()[0]:.1f}")
    print(f"{'dt':>6}" + "".join(f"{f'{k} {how}':>16}" for k in codes for how in ("lazy", "loaded"))
          + f"{'baseline':>12}{'loaded/baseline':>17}")
    for dt in (0.005, 0.001):
        args.dt = dt
        runs = {(k, how): run_stage(f"items_{how}", args, cache, code)
                for k, code in codes.items() for how in ("loaded", "lazy")}
        res = {key: run[f"{key[1]}_items_per_s"] for key, run in runs.items()}
        base = runs["new", "loaded"]["baseline_items_per_s"]
        print(f"{dt:>6}" + "".join(f"{res[k, how]:>16.0f}" for k in codes for how in ("lazy", "loaded"))
              + f"{base:>12.0f}{res['new', 'loaded'] / base:>17.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def run_stage(stage: str, args: argparse.Namespace, cache: Path, code: Path | None = None) -> dict:
    env = {**os.environ, "AA4XR_CACHE_DIR": str(cache), **({"PYTHONPATH": str(code)} if code else {})}
    cmd = [sys.executable, __file__, "--stage", stage, "--root", str(args.root), "--dt", str(args.dt),
           "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
           "--chunk-mb", str(args.chunk_mb)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"stage {stage} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="animal", choices=["sample", "animal", "full"])
    p.add_argument("--root", type=Path, help="an existing corpus (default: write one under /tmp)")
    p.add_argument("--dt", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--chunk-mb", type=float, default=32.0, help="open_aa4's chunk_mb for the epochs")
    p.add_argument("--stage", choices=list(STAGES))
    p.add_argument("--items", action="store_true",
                   help="only items/s: TorchDataset lazy and loaded against prebuilt tensors, at 5 and 1 ms")
    p.add_argument("--old", type=Path, help="also run the items/s stages on this older aa4xr checkout")
    args = p.parse_args()
    if args.stage:
        t0 = time.perf_counter()
        result = STAGES[args.stage](root=args.root, dt=args.dt, batch_size=args.batch_size,
                                    num_workers=args.num_workers, chunk_mb=args.chunk_mb)
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), **result}))
        return
    args.root = args.root or Path(tempfile.gettempdir()) / f"aa4xr-bench-{args.size}"
    if not args.root.exists():
        from aa4xr.synthetic import write_corpus

        t0 = time.perf_counter()
        write_corpus(args.root, args.size, seed=1, progress=True)
        print(f"wrote {args.size} corpus to {args.root} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.items:
        items_table(args)
        return
    cache = Path(tempfile.mkdtemp(prefix="aa4xr-bench-cache-"))
    print(f"corpus: {args.root}, dt={args.dt}, batch_size={args.batch_size}, "
          f"num_workers={args.num_workers}, chunk_mb={args.chunk_mb}, {os.cpu_count()} cores")
    try:
        res = {s: run_stage(s, args, cache) for s in STAGES}
    finally:
        shutil.rmtree(cache)
    labels = {"ingest": "(a) ingest (first open_aa4)", "open": "(b) open from the store",
              "epoch": "(c) epoch, all neurons", "epoch_animal": "(d) epoch, one animal"}
    print(f"{'stage':<30}{'seconds':>9}{'peak MB':>9}")
    for stage, label in labels.items():
        print(f"{label:<30}{res[stage]['seconds']:>9.2f}{res[stage]['peak_mb']:>9.0f}")
    print(f"\n{'epoch':<14}{'items':>7}{'dense MB':>10}{'batch MB':>10}{'before MB':>11}{'peak MB':>9}"
          f"{'(peak-before)/dense':>21}{'epoch s':>9}{'epoch / one pass':>18}")
    for stage in ("epoch", "epoch_animal"):
        r = res[stage]
        growth = (r["epoch_peak_mb"] - r["before_mb"]) / r["dense_mb"]
        print(f"{stage:<14}{r['items']:>7}{r['dense_mb']:>10.0f}{r['batch_mb']:>10.1f}"
              f"{r['before_mb']:>11.0f}{r['epoch_peak_mb']:>9.0f}{growth:>21.3f}{r['epoch_s']:>9.1f}"
              f"{r['epoch_s'] / r['one_pass_s']:>18.1f}")
    print("before = resident memory with torch imported and the Dataset opened, before the first batch;\n"
          "peak = resident memory sampled every 5 ms during the epoch (workers included);")
    print("one pass = ds.spike_count.notnull().sum(), every chunk computed once")


if __name__ == "__main__":
    main()
