"""Binning kernel benchmark: the previous ``count_block`` against today's, side by side in one run.

    python benchmarks/binning.py               # 1 ms and 5 ms, a 32 MB block and a ~10-stimulus run
    python benchmarks/binning.py --repeat 9    # more repetitions (the best time of each is kept)

Blocks the size :mod:`aa4xr.backend` bins (29 neurons x a run of stimuli x 10
trials, 1-6 s stimuli, 10-40 spikes per trial sorted in time, some trials missing, some
spans cut short or unrecorded, rows in shuffled cell order) are built with a
fixed seed. Each case asserts that both kernels give the same array (NaN
positions included) and prints the best time of each, their ratio, and the
peak memory each allocates beyond the ``out=`` array (tracemalloc).

The previous kernel is the code of commit b58ab86 (``bin_rows`` made an int64
``bincount`` of rows x time, then a float32 copy, a NaN mask and a scatter),
copied below; the helpers it calls (``bin_index``, ``gather``, ``row_bins``)
are unchanged since.
"""

from __future__ import annotations

import argparse
import time as clock
import tracemalloc
from typing import Callable

import numpy as np

from aa4xr.binning import bin_index, count_block, gather, row_bins


def old_bin_rows(spike_time: np.ndarray, row_size: np.ndarray, time: np.ndarray, dt: float) -> np.ndarray:
    """``bin_rows`` as of b58ab86."""
    row_size = np.asarray(row_size, np.int64)
    n_rows, n_time = row_size.size, time.size
    row = np.repeat(np.arange(n_rows), row_size)
    k = bin_index(spike_time, time, dt)
    keep = k >= 0
    flat = row[keep] * n_time + k[keep]
    return np.bincount(flat, minlength=n_rows * n_time).reshape(n_rows, n_time).astype(np.float32)


def old_count_block(spike_time, starts, sizes, cell, row_duration, pre_time, post_time, shape, time, dt, post,
                    out=None):
    """``count_block`` as of b58ab86."""
    n_cells = int(np.prod(shape))
    if out is None:
        out = np.empty((*shape, time.size), np.float32)
    flat = out.reshape(n_cells, time.size)
    flat.fill(np.nan)
    counts = old_bin_rows(spike_time if starts is None else gather(spike_time, starts, sizes), sizes, time, dt)
    first, stop = row_bins(time, dt, row_duration, pre_time, post_time, post)
    k = np.arange(time.size)
    counts[(k < first[:, None]) | (k >= stop[:, None])] = np.nan
    flat[cell] = counts
    return out


def block_inputs(n_stim: int, dt: float, seed: int = 0, n_neuron: int = 29, n_trial: int = 10,
                 pre: float = 0.5, post: float = 0.5) -> dict:
    """Keyword arguments of ``count_block`` for one realistic block (``starts=None``, shuffled rows)."""
    rng = np.random.default_rng(seed)
    durations = rng.uniform(1.0, 6.0, n_stim)
    longest = durations.max()
    time = -pre + np.arange(int(np.ceil((longest + pre + post) / dt))) * dt
    shape = (n_stim, n_neuron, n_trial)
    cell = np.flatnonzero(rng.random(int(np.prod(shape))) < 0.9)  # about one trial in ten missing
    cell = rng.permutation(cell)
    n = cell.size
    stim = cell // (n_neuron * n_trial)
    row_duration = durations[stim]
    pre_time = np.where(rng.random(n) < 0.05, np.nan, np.where(rng.random(n) < 0.1, rng.uniform(0, pre, n), 2.0))
    post_time = np.where(rng.random(n) < 0.05, np.nan, np.where(rng.random(n) < 0.1, 0.0, 2.0))
    sizes = rng.integers(10, 41, n)
    row = np.repeat(np.arange(n), sizes)
    spikes = rng.uniform(-pre - 0.2, row_duration[row] + post + 0.2)
    spikes = spikes[np.lexsort((spikes, row))]  # sorted within each trial, as recorded
    return dict(spike_time=spikes, starts=None, sizes=sizes, cell=cell, row_duration=row_duration,
                pre_time=pre_time, post_time=post_time, shape=shape, time=time, dt=dt, post=post)


def best_time(kernel: Callable, inputs: dict, out: np.ndarray, repeat: int) -> float:
    """Best wall time of ``kernel(**inputs, out=out)`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = clock.perf_counter()
        kernel(**inputs, out=out)
        times.append(clock.perf_counter() - t0)
    return min(times)


def peak_extra(kernel: Callable, inputs: dict, out: np.ndarray) -> int:
    """Peak bytes ``kernel`` allocates beyond the given ``out``."""
    tracemalloc.start()
    try:
        kernel(**inputs, out=out)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = [(0.001, 4), (0.001, 10), (0.005, 20), (0.005, 50)]
    print(f"{'dt':>6} {'stims':>5} {'rows':>6} {'bins':>5} {'MB':>6} {'old ms':>8} {'new ms':>8} {'old/new':>7}"
          f" {'old extra MB':>12} {'new extra MB':>12}")
    for dt, n_stim in cases:
        inputs = block_inputs(n_stim, dt)
        old_out = np.empty((*inputs["shape"], inputs["time"].size), np.float32)
        new_out = np.empty_like(old_out)
        assert old_count_block(**inputs, out=old_out) is old_out
        assert count_block(**inputs, out=new_out) is new_out
        assert np.array_equal(old_out, new_out, equal_nan=True), f"dt={dt}, {n_stim} stimuli: outputs differ"
        old_s = best_time(old_count_block, inputs, old_out, args.repeat)
        new_s = best_time(count_block, inputs, new_out, args.repeat)
        old_mb, new_mb = (peak_extra(k, inputs, new_out) / 1e6 for k in (old_count_block, count_block))
        print(f"{dt:>6} {n_stim:>5} {inputs['cell'].size:>6} {inputs['time'].size:>5} {old_out.nbytes / 1e6:>6.0f}"
              f" {old_s * 1e3:>8.1f} {new_s * 1e3:>8.1f} {old_s / new_s:>7.1f} {old_mb:>12.1f} {new_mb:>12.1f}")


if __name__ == "__main__":
    main()
