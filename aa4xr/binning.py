"""Ragged spike times -> spike counts on a time grid, vectorised.

The grid: bin ``k`` covers ``[t_k, t_k + dt)`` with ``t_k = -pre + k * dt``.
A stimulus's window is ``[-pre, duration + post)``: bin ``k`` is inside when
``t_k < duration + post``. A trial's recorded span is
``[-pre_time, duration + post_time]``; a bin wholly outside it holds no data.
"""

from __future__ import annotations

import numpy as np


def time_grid(durations: np.ndarray, dt: float, pre: float = 0.0, post: float = 0.0) -> np.ndarray:
    """Bin starts covering the longest stimulus window.

    Examples
    --------
    >>> time_grid(np.array([0.01, 0.02]), dt=0.005, pre=0.005)
    array([-0.005,  0.   ,  0.005,  0.01 ,  0.015])
    """
    longest = float(np.max(durations, initial=0.0))
    time = bin_starts(int(np.ceil((longest + post + pre) / dt)) + 2, dt, pre)
    return time[: int(window_mask(time, np.array([longest]), post).sum())]


def bin_starts(n: int, dt: float, pre: float) -> np.ndarray:
    """``t_k = -pre + k * dt`` for ``k = 0 .. n-1`` (the one formula used everywhere)."""
    return -pre + np.arange(n) * dt


def window_mask(time: np.ndarray, durations: np.ndarray, post: float) -> np.ndarray:
    """``(stim, time)`` bool: bin inside ``[-pre, duration + post)``."""
    return time[None, :] < (np.asarray(durations, float)[:, None] + post)


def span_mask(time: np.ndarray, dt: float, durations: np.ndarray, pre_time: np.ndarray,
              post_time: np.ndarray) -> np.ndarray:
    """``(row, time)`` bool: bin overlaps the trial's span ``[-pre_time, duration + post_time]``.

    A NaN ``pre_time`` or ``post_time`` (not recorded) leaves that side open.

    Examples
    --------
    >>> span_mask(np.array([-0.2, -0.1, 0.0]), 0.1, np.array([0.05]), np.array([0.1]), np.array([0.0]))
    array([[False,  True,  True]])
    """
    lo = np.where(np.isnan(pre_time), -np.inf, -np.asarray(pre_time, float))
    hi = np.where(np.isnan(post_time), np.inf, np.asarray(durations, float) + post_time)
    return (time[None, :] + dt > lo[:, None]) & (time[None, :] <= hi[:, None])


def row_bins(time: np.ndarray, dt: float, durations: np.ndarray, pre_time: np.ndarray, post_time: np.ndarray,
             post: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the bins ``first <= k < stop`` inside both its window and its span.

    The same bins as ``span_mask(...) & window_mask(...)`` (both are runs of
    an increasing grid), found by binary search instead of a (row, time) pass.

    Examples
    --------
    >>> row_bins(np.array([-0.2, -0.1, 0.0, 0.1]), 0.1, np.array([0.15]), np.array([0.1]), np.array([1.0]), 0.0)
    (array([1]), array([4]))
    """
    durations = np.asarray(durations, float)
    lo = np.where(np.isnan(pre_time), -np.inf, -np.asarray(pre_time, float))
    hi = np.where(np.isnan(post_time), np.inf, durations + post_time)
    first = np.searchsorted(time + dt, lo, side="right")
    stop = np.minimum(np.searchsorted(time, hi, side="right"), np.searchsorted(time, durations + post, side="left"))
    return first, np.maximum(stop, first)


def bin_index(spike_time: np.ndarray, time: np.ndarray, dt: float) -> np.ndarray:
    """Index of the bin holding each spike, -1 outside the grid.

    Exact against the edges ``time`` and ``time[0] + time.size * dt`` (on a
    whole grid, the next :func:`bin_starts` value): a spike on an edge
    belongs to the bin that starts there, so a slice of a grid places spikes
    as the whole grid does. ``floor`` rounding is corrected by comparing with
    the edges on both sides.

    Examples
    --------
    >>> bin_index(np.array([-0.1, 0.0, 0.0049, 0.005, 0.0099, 0.01]), np.array([0.0, 0.005]), 0.005)
    array([-1,  0,  0,  1,  1, -1])
    """
    n = time.size
    if not n:
        return np.full(np.shape(spike_time), -1, np.int64)
    k = _bins(spike_time, time, dt, _edges(time, dt))
    return np.where((k >= 0) & (k < n), k, -1)


def _edges(time: np.ndarray, dt: float) -> np.ndarray:
    """The grid's edges padded with infinities: bin ``k`` spans ``edges[k + 1] <= t < edges[k + 2]``."""
    return np.concatenate([[-np.inf], time, [time[0] + time.size * dt, np.inf]])


def _bins(spike_time: np.ndarray, time: np.ndarray, dt: float, edges: np.ndarray) -> np.ndarray:
    """:func:`bin_index` before its last step: -1 below the grid, ``time.size`` above it (and for NaN)."""
    n = time.size
    guess = np.subtract(spike_time, time[0], dtype=np.float64)
    guess /= dt
    np.floor(guess, out=guess)
    k = np.fmax(np.fmin(guess, n, out=guess), -1, out=guess).astype(np.int64)  # fmin: NaN -> n (outside)
    k -= spike_time < edges[k + 1]
    k += spike_time >= edges[k + 2]
    return k


def bin_rows(spike_time: np.ndarray, row_size: np.ndarray, time: np.ndarray, dt: float) -> np.ndarray:
    """Counts ``(row, time)`` float32 of a contiguous ragged array.

    Spikes are added into a zeroed float32 array (no dense integer
    temporary, no Python loop per trial).

    Examples
    --------
    >>> bin_rows(np.array([0.001, 0.004, 0.006]), np.array([2, 0, 1]), np.array([0.0, 0.005]), 0.005)
    array([[2., 0.],
           [0., 0.],
           [0., 1.]], dtype=float32)
    """
    n_rows = np.size(row_size)
    counts = np.zeros((n_rows, time.size), np.float32)
    add_spikes(counts.reshape(-1), spike_time, row_size, np.arange(n_rows), np.zeros(n_rows, np.int64),
               np.full(n_rows, time.size), time, dt)
    return counts


def add_spikes(flat: np.ndarray, spike_time: np.ndarray, sizes: np.ndarray, cell: np.ndarray, first: np.ndarray,
               stop: np.ndarray, time: np.ndarray, dt: float, chunk: int = 2**14) -> None:
    """Add 1 to ``flat[cell[r] * T + k]`` for each spike of row ``r`` in a bin ``first[r] <= k < stop[r]``.

    ``flat`` is the 1-D float32 view of a ``(cell, time)`` array and the rows'
    spikes lie back to back in ``spike_time``. Spikes are taken ``chunk`` at
    a time, so every temporary stays in cache; ``np.add.at`` sums repeats.
    """
    if not time.size:
        return
    sizes = np.asarray(sizes, np.int64)
    edges = _edges(time, dt)
    base = np.repeat(np.asarray(cell, np.int64) * time.size, sizes)  # per spike, sequential reads below
    lo, hi = np.repeat(first, sizes), np.repeat(stop, sizes)
    for i in range(0, base.size, chunk):
        k = _bins(spike_time[i:i + chunk], time, dt, edges)  # -1 or time.size outside: never in [lo, hi)
        keep = (k >= lo[i:i + chunk]) & (k < hi[i:i + chunk])
        np.add.at(flat, base[i:i + chunk][keep] + k[keep], np.float32(1))


def gather(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenate ``values[s:s+n]`` for each (start, size), vectorised."""
    sizes = np.asarray(sizes, np.int64)
    offsets = np.cumsum(sizes) - sizes
    return values[np.repeat(np.asarray(starts, np.int64) - offsets, sizes) + np.arange(sizes.sum())]


def count_block(spike_time: np.ndarray, starts: np.ndarray | None, sizes: np.ndarray, cell: np.ndarray,
                row_duration: np.ndarray, pre_time: np.ndarray, post_time: np.ndarray,
                shape: tuple[int, int, int], time: np.ndarray, dt: float, post: float,
                out: np.ndarray | None = None) -> np.ndarray:
    """One ``(stim, neuron, trial, time)`` block of ``spike_count``, NaN-masked.

    Two passes over the block: each cell's NaN/0 pattern is written once,
    then the spikes are added in place; no dense temporary.

    Parameters
    ----------
    spike_time : ndarray
        Spike times holding every row of the block.
    starts, sizes : ndarray
        Each row's offset into ``spike_time`` (None: the rows lie back to back, in order) and spike count.
    cell : ndarray
        Each row's flat position ``(s * N + n) * R + r`` in the block.
    row_duration, pre_time, post_time : ndarray
        Each row's stimulus duration and recorded span.
    shape : (S, N, R)
        Block shape without time.
    time, dt : ndarray, float
        The grid (this block's time bins) and bin width.
    post : float
        Seconds kept after each stimulus's end.
    out : ndarray, optional
        A C-contiguous float32 ``(S, N, R, T)`` array to fill (no copy), e.g. part of a larger read.

    Returns
    -------
    ndarray
        float32 ``(S, N, R, T)``: counts where a trial exists and the bin lies
        in its stimulus's window and its span (see :func:`row_bins`); NaN elsewhere.
    """
    n_cells = int(np.prod(shape))
    if out is None:
        out = np.empty((*shape, time.size), np.float32)
    elif not (out.flags.c_contiguous and out.shape == (*shape, time.size)):
        raise ValueError(f"out must be C-contiguous with shape {(*shape, time.size)}, got {out.shape}")
    flat = out.reshape(n_cells, time.size)  # a view: out must be C-contiguous
    first, stop = row_bins(time, dt, row_duration, pre_time, post_time, post)
    cell = np.asarray(cell, np.int64)
    cell_first, cell_stop = np.zeros(n_cells, np.int64), np.zeros(n_cells, np.int64)  # no row: no bin kept
    cell_first[cell], cell_stop[cell] = first, stop
    _fill_runs(flat, cell_first, cell_stop)
    add_spikes(flat.reshape(-1), spike_time if starts is None else gather(spike_time, starts, sizes), sizes, cell,
               first, stop, time, dt)
    return out


def _fill_runs(flat: np.ndarray, first: np.ndarray, stop: np.ndarray, slab_bytes: int = 2**23) -> None:
    """Set ``flat[i, first[i]:stop[i]] = 0`` and every other element to NaN, in one pass over ``flat``.

    Rows sharing a ``(first, stop)`` run copy one pattern row: ``np.take``
    writes straight into ``flat`` (``mode="clip"`` avoids its buffered copy;
    every index is valid). Patterns are made a slab of ``slab_bytes`` of
    ``flat`` at a time, so they never outgrow the slab.
    """
    n_time = flat.shape[1]
    step = max(1, slab_bytes // max(1, flat[:1].nbytes))
    for i in range(0, flat.shape[0], step):
        runs, pattern = np.unique(first[i:i + step] * (n_time + 1) + stop[i:i + step], return_inverse=True)
        rows = np.full((runs.size, n_time), np.nan, np.float32)
        for row, lo, hi in zip(rows, (runs // (n_time + 1)).tolist(), (runs % (n_time + 1)).tolist()):
            row[lo:hi] = 0
        np.take(rows, pattern, axis=0, out=flat[i:i + step], mode="clip")
