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

    Exact against the edges ``time`` (and ``time[-1] + dt``): a spike on an
    edge belongs to the bin that starts there.
    """
    n = time.size
    edges = bin_starts(n + 1, dt, -time[0]) if n else np.zeros(1)
    k = np.floor((spike_time - edges[0]) / dt).astype(np.int64)
    k = np.clip(k, -1, n)
    inside = (k >= 0) & (k < n)
    kk = np.where(inside, k, 0)
    k = np.where(inside & (spike_time < edges[kk]), k - 1, k)
    kk = np.clip(k, 0, n - 1)
    k = np.where((k >= 0) & (k < n) & (spike_time >= edges[kk + 1]), k + 1, k)
    return np.where((k >= 0) & (k < n), k, -1)


def bin_rows(spike_time: np.ndarray, row_size: np.ndarray, time: np.ndarray, dt: float) -> np.ndarray:
    """Counts ``(row, time)`` float32 of a contiguous ragged array.

    One ``bincount`` for all rows, no Python loop per trial.

    Examples
    --------
    >>> bin_rows(np.array([0.001, 0.004, 0.006]), np.array([2, 0, 1]), np.array([0.0, 0.005]), 0.005)
    array([[2., 0.],
           [0., 0.],
           [0., 1.]], dtype=float32)
    """
    row_size = np.asarray(row_size, np.int64)
    n_rows, n_time = row_size.size, time.size
    row = np.repeat(np.arange(n_rows), row_size)
    k = bin_index(spike_time, time, dt)
    keep = k >= 0
    flat = row[keep] * n_time + k[keep]
    return np.bincount(flat, minlength=n_rows * n_time).reshape(n_rows, n_time).astype(np.float32)


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
    flat.fill(np.nan)
    counts = bin_rows(spike_time if starts is None else gather(spike_time, starts, sizes), sizes, time, dt)
    first, stop = row_bins(time, dt, row_duration, pre_time, post_time, post)
    k = np.arange(time.size)
    counts[(k < first[:, None]) | (k >= stop[:, None])] = np.nan
    flat[cell] = counts
    return out
