"""The ``aa4`` xarray engine: ``xr.open_dataset(root, engine="aa4", dt=...)``.

``spike_count`` is a :class:`SpikeCountArray`, a lazily indexed
:class:`xarray.backends.BackendArray` over the spike-time store: any
``isel``/``sel``/slice bins only the selected (stim, neuron, trial, time)
cells, from only their rows. Its ``preferred_chunks`` follow the store's
layout (stimulus runs by one animal's neurons), so ``chunks={}`` gives dask
chunks whose tasks are one small picklable key each: a worker rebuilds the
row layout from the store once, and the graph's size depends on the number
of chunks, not of trials. Selections on a chunked array reach the reader
through dask's slice fusion.

A netCDF file exported by aa4xr opens with ``engine="aa4"`` too, with its
label indexes restored (see :func:`aa4xr.index_coords`).

Examples
--------
>>> import xarray as xr
>>> from aa4xr.layout import resolve_root
>>> ds = xr.open_dataset(resolve_root(None), engine="aa4", dt=0.01, chunks={})
>>> one = ds.spike_count.isel(neuron=0).mean("trial")  # will bin one neuron's rows only
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .binning import add_spikes, count_block, gather, row_bins, time_grid
from .store import CHUNK, StoreError, file_identity, spike_time_of

__all__ = ["AA4BackendEntrypoint", "SpikeCountArray", "DaskArray", "TrialArray", "Layout", "direct_reader", "trial_mean"]


@dataclass(frozen=True, eq=False)
class Layout:
    """Where every (stim, neuron, trial) cell's spikes lie.

    The rows of the pair ``(s, n)`` are the ``pair_count[p]`` rows from
    ``pair_row[p]`` on (``p = s * N + n``) of the ``row_*`` arrays: each
    store lists a pair's trials together, so the rows keep the stores' order.
    """

    paths: tuple[str, ...]
    shape: tuple[int, int, int]
    time: np.ndarray
    dt: float
    post: float
    durations: np.ndarray
    pair_row: np.ndarray
    pair_count: np.ndarray
    row_path: np.ndarray
    row_start: np.ndarray
    row_size: np.ndarray
    row_trial: np.ndarray
    row_pre: np.ndarray
    row_post: np.ndarray
    stim_labels: np.ndarray
    neuron_labels: np.ndarray

    def rows_of(self, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the cells ``stim x neuron x trial`` (sorted unique positions) and each row's flat cell."""
        pair = (stim[:, None] * self.shape[1] + neuron[None, :]).ravel()
        lo, n = self.pair_row[pair], self.pair_count[pair]
        rows = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(n.sum())  # the rows lo .. lo + n of each pair
        place = np.full(self.shape[2], -1)
        place[trial] = np.arange(trial.size)
        r = place[self.row_trial[rows]]
        keep = r >= 0
        cell = np.repeat(np.arange(pair.size), n)[keep] * trial.size + r[keep]
        return rows[keep], cell

    def bin(self, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray, time: np.ndarray,
            block_bytes: int = 2**25, out: np.ndarray | None = None) -> np.ndarray:
        """``spike_count[stim, neuron, trial, time]`` for sorted unique positions, float32, NaN-masked.

        Filled a run of stimuli at a time (``block_bytes`` of output each), so
        a large read peaks near its own size; into ``out`` when given (a
        C-contiguous float32 array of the result's shape, e.g. one item's
        place in a batch).
        """
        shape = (stim.size, neuron.size, trial.size, time.size)
        if out is None:
            out = np.empty(shape, np.float32)
        elif not (out.flags.c_contiguous and out.shape == shape and out.dtype == np.float32):
            raise ValueError(f"out must be C-contiguous float32 of shape {shape}, got {out.dtype} {out.shape}")
        if not out.size:
            return out
        contiguous = time.size == time[-1] - time[0] + 1
        step = max(1, block_bytes // max(1, out[:1].nbytes))
        for i in range(0, stim.size, step):
            part = out[i:i + step]
            filled = self._bin(stim[i:i + step], neuron, trial, time, part if contiguous else None)
            if not contiguous:
                part[...] = filled
        return out

    def _bin(self, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray, time: np.ndarray,
             out: np.ndarray | None) -> np.ndarray:
        rows, cell, spikes = self._spikes(*self.rows_of(stim, neuron, trial))
        shape = (stim.size, neuron.size, trial.size)
        t0, t1 = int(time[0]), int(time[-1]) + 1
        pair_stim = stim[cell // (neuron.size * trial.size)]
        block = count_block(spikes, None, self.row_size[rows], cell,
                            self.durations[pair_stim], self.row_pre[rows], self.row_post[rows], shape,
                            self.time[t0:t1], self.dt, self.post, out)
        return block if t1 - t0 == time.size else block[..., time - t0]

    def _spikes(self, rows: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows and their cells, ordered by store, and the rows' spikes back to back in that order."""
        by_path = np.argsort(self.row_path[rows], kind="stable")
        rows, cell = rows[by_path], cell[by_path]
        path, sizes = self.row_path[rows], self.row_size[rows]
        spikes = np.concatenate([np.empty(0)] + [row_spikes(self.paths[p], self.row_start[rows[path == p]],
                                                            sizes[path == p]) for p in np.unique(path)])
        return rows, cell, spikes

    def trial_mean(self, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray, time: np.ndarray) -> np.ndarray:
        """``spike_count[stim, neuron, trial, time]`` averaged over trials, without making that block.

        Equal to the NaN-skipping mean of :meth:`bin` over ``trial``: per
        (stim, neuron, bin), the spikes of the trials whose window and span
        hold the bin, divided by how many trials do; NaN where none does.
        Each row's spikes are added to its pair's bins, and each row's bins
        ``first <= k < stop`` (:func:`aa4xr.binning.row_bins`) to its pair's
        trial count, so the work and memory follow the rows and the
        ``(stim, neuron, time)`` result, not ``trial`` times it.

        Returns
        -------
        ndarray
            float32 ``(stim, neuron, time)`` for sorted unique positions.
        """
        shape = (stim.size, neuron.size)
        if not (stim.size and neuron.size and trial.size and time.size):
            return np.full((*shape, time.size), np.nan, np.float32)
        t0, t1 = int(time[0]), int(time[-1]) + 1
        rows, cell = self.rows_of(stim, neuron, trial)
        rows, pair, spikes = self._spikes(rows, cell // trial.size)
        grid = self.time[t0:t1]
        first, stop = row_bins(grid, self.dt, self.durations[stim[pair // neuron.size]], self.row_pre[rows],
                               self.row_post[rows], self.post)
        out = np.zeros((pair_count := stim.size * neuron.size, grid.size), np.float32)  # spikes, then the mean
        add_spikes(out.reshape(-1), spikes, self.row_size[rows], pair, first, stop, grid, self.dt)
        n = np.zeros((pair_count, grid.size + 1), np.float32)  # +1 at each row's first bin, -1 at its stop,
        np.add.at(n.reshape(-1), pair * (grid.size + 1) + first, 1)  # then summed: trials per bin (exact)
        np.add.at(n.reshape(-1), pair * (grid.size + 1) + stop, -1)
        n = np.cumsum(n, axis=1, out=n)[:, :-1]
        none = n == 0
        np.divide(out, n, out=out, where=~none, dtype=np.float64)  # as xarray divides: in float64
        out[none] = np.nan
        out = out.reshape(*shape, grid.size)
        return out if grid.size == time.size else out[..., time - t0]


def pair_runs(rows, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each pair's first row and number of rows, when every pair's rows lie together (else None).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> rows = SimpleNamespace(stim=np.array([1, 1, 0]), neuron=np.array([0, 0, 1]))
    >>> [a.tolist() for a in pair_runs(rows, (2, 2, 2))]
    [[0, 2, 0, 0], [0, 1, 2, 0]]
    >>> pair_runs(SimpleNamespace(stim=np.array([1, 0, 1]), neuron=np.array([0, 0, 0])), (2, 2, 2)) is None
    True
    """
    S, N, _ = shape
    pair = rows.stim.astype("i8") * N + rows.neuron
    first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if pair.size else np.zeros(0, np.intp)
    if np.bincount(pair[first], minlength=S * N).max(initial=0) > 1:
        return None
    pair_row, pair_count = np.zeros(S * N, np.int64), np.zeros(S * N, np.int64)
    pair_row[pair[first]] = first
    pair_count[pair[first]] = np.diff(np.r_[first, pair.size])
    return pair_row, pair_count


def together_by_pair(rows, shape: tuple[int, int, int]):
    """The rows (:class:`aa4xr.dataset.Rows`) reordered by (stim, neuron, trial): one stable sort."""
    _, N, T = shape
    order = np.argsort((rows.stim.astype("i8") * N + rows.neuron) * T + rows.trial, kind="stable")
    return replace(rows, **{k: getattr(rows, k)[order] for k in ("path", "stim", "neuron", "trial", "start", "size")},
                   values={k: v[order] for k, v in rows.values.items()},
                   labels={k: (codes[order], table) for k, (codes, table) in rows.labels.items()})


def row_spikes(path: str, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The spikes of a store's rows (``spike_time[start:start + size]`` each, concatenated).

    Read through the store's handle kept open by this process (see
    :func:`aa4xr.store.spike_time_of`), over the spans the rows cover (rows
    a chunk or less apart share one) when those are under a quarter of it:
    a stimulus's rows lie together, a neuron's lie in one run per stimulus.
    Otherwise ``spike_time`` is read whole once and kept for the process,
    while the file is the same one.
    """
    if not starts.size:
        return np.empty(0)
    identity = file_identity(path)
    dset = spike_time_of(identity)
    lo, hi, run = _spans(starts, sizes, gap=CHUNK)
    if (hi - lo).sum() >= dset.shape[0] // 4:
        return gather(_whole(identity), starts, sizes)
    try:
        spans = dset[lo[0]:hi[0]] if lo.size == 1 else np.concatenate([dset[a:b] for a, b in zip(lo, hi)])
    except OSError as exc:
        raise StoreError(f"{path}: spike_time unreadable ({exc}); rebuild the store with "
                         "open_aa4(..., rebuild=True) or `aa4xr cache clear`") from exc
    return gather(spans, starts - lo[run] + (np.cumsum(hi - lo) - (hi - lo))[run], sizes)


def _spans(starts: np.ndarray, sizes: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spans ``[lo, hi)`` covering rows, merged when less than ``gap`` apart, and each row's span.

    Examples
    --------
    >>> _spans(np.array([100, 0, 5]), np.array([2, 3, 1]), gap=10)
    (array([  0, 100]), array([  6, 102]), array([1, 0, 0]))
    """
    order = np.argsort(starts, kind="stable")
    begin, end = starts[order], (starts + sizes)[order]
    reach = np.maximum.accumulate(end)
    new = np.r_[True, begin[1:] > reach[:-1] + gap]
    first = np.flatnonzero(new)
    run = np.empty(starts.size, np.intp)
    run[order] = np.cumsum(new) - 1
    return begin[first], np.maximum.reduceat(end, first), run


@functools.lru_cache(maxsize=8)
def _whole(identity: tuple) -> np.ndarray:
    """A store's whole ``spike_time`` (by :func:`aa4xr.store.file_identity`), read once per process."""
    try:
        return spike_time_of(identity)[()]
    except OSError as exc:
        raise StoreError(f"{identity[0]}: spike_time unreadable ({exc}); rebuild the store with "
                         "open_aa4(..., rebuild=True) or `aa4xr cache clear`") from exc


@functools.lru_cache(maxsize=4)
def _layout(key: tuple) -> Layout:
    """The layout of an open, rebuilt from the stores (once per process) when a worker unpickles an array."""
    from .dataset import _collect  # the row placement open_aa4 uses

    root, paths, sort_types, stim_types, dt, pre, post = key
    stims, units, rows, _ = _collect(Path(root), dict(paths), sort_types, stim_types)
    return _layout_of(rows, paths, stims, units, dt, pre, post)[0]


def _layout_of(rows, paths, stims, units, dt, pre, post):
    """The :class:`Layout` of :class:`aa4xr.dataset.Rows`, and the rows in its order.

    The stores list each pair's rows together, so they keep their order;
    rows that do not are placed by one sort (see :func:`together_by_pair`).
    """
    shape = (len(stims), len(units), int(rows.trial.max(initial=-1)) + 1)
    runs = pair_runs(rows, shape)
    if runs is None:
        rows = together_by_pair(rows, shape)
        runs = pair_runs(rows, shape)
    durations = stims["duration"].to_numpy("f8")
    layout = Layout(tuple(str(p) for _, p in paths), shape, time_grid(durations, dt, pre, post), float(dt),
                    float(post), durations, *runs, rows.path, rows.start, rows.size, rows.trial,
                    np.asarray(rows.values["pre_time"], float), np.asarray(rows.values["post_time"], float),
                    stims["md5"].to_numpy(str), units["neuron"].to_numpy(str))
    return layout, rows


def _positions(k, n: int) -> np.ndarray:
    return np.arange(n)[k] if isinstance(k, slice) else np.atleast_1d(np.asarray(k, "i8")) % max(n, 1)


def _increasing(positions: np.ndarray) -> bool:
    """Whether positions are sorted and unique (then read as they are, without a sort).

    Examples
    --------
    >>> _increasing(np.array([0, 2, 3])), _increasing(np.array([2, 0])), _increasing(np.array([1, 1]))
    (True, False, False)
    """
    return positions.size < 2 or bool((positions[1:] > positions[:-1]).all())


class SpikeCountArray(BackendArray):
    """``spike_count (stim, neuron, trial, time)``: bins exactly the cells an outer index selects.

    Pickles as the key of its open (root, store paths, choices, grid):
    an unpickled copy rebuilds its :class:`Layout` from the stores once per
    process, so a dask graph ships no per-trial arrays.
    """

    def __init__(self, key: tuple, layout: Layout | None = None):
        self.key = key
        self._layout = layout
        probe = layout or _layout(key)
        self.shape = (*probe.shape, probe.time.size)
        self.dtype = np.dtype(np.float32)

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = _layout(self.key)
        return self._layout

    def __reduce__(self):
        return (_unpickle, (self.key, self.shape))

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple) -> np.ndarray:
        return _outer(key, self.shape, self.layout.bin)


def _outer(key: tuple, shape: tuple[int, ...], read) -> np.ndarray:
    """An outer index ``key`` of an array of ``shape``, through ``read(*positions)`` of sorted unique positions.

    Repeated or unordered positions are read once and then arranged as
    asked; an integer drops its dimension.
    """
    wanted = [_positions(k, n) for k, n in zip(key, shape)]
    if all(_increasing(w) for w in wanted):  # slices and sorted selections (every dask task): read as they are
        out = read(*wanted)
    else:
        unique = [np.unique(w, return_inverse=True) for w in wanted]
        out = read(*(u for u, _ in unique))[np.ix_(*(inv.ravel() for _, inv in unique))]
    drop = tuple(i for i, k in enumerate(key) if not isinstance(k, slice) and np.ndim(k) == 0)
    return out.squeeze(axis=drop) if drop else out


class TrialArray(BackendArray):
    """A per-trial variable ``(stim, neuron, trial)``, placed from its rows on access; ``fill`` where no trial is.

    An open makes no ``(stim, neuron, trial)`` grid: the values stay one per
    row (in the :class:`Layout`'s order) until a selection is read. With
    ``table``, the values are codes and the strings ``table[code]`` are
    returned (``protocol``, ``trial_name``: 4 bytes per row, not 4 per
    character per cell).

    Examples
    --------
    >>> layout = Layout(("store.nc",), (1, 2, 2), np.zeros(1), 0.01, 0.0, np.ones(1), np.array([0, 2]),
    ...                 np.array([2, 1]), *(np.zeros(3, int),) * 3, np.array([0, 1, 0]), *(np.zeros(3),) * 2,
    ...                 np.array(["s"]), np.array(["a", "b"]))
    >>> labels = TrialArray(layout, np.array([0, 1, 1]), 2, np.array(["x", "y", ""]))
    >>> labels[indexing.BasicIndexer((0, 1, slice(None)))].tolist()
    ['y', '']
    """

    def __init__(self, layout: Layout, values: np.ndarray, fill, table: np.ndarray | None = None):
        self.layout, self.values, self.fill, self.table = layout, values, fill, table
        self.shape = layout.shape
        self.dtype = values.dtype if table is None else table.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple) -> np.ndarray:
        out = _outer(key, self.shape, self._read)
        return out if self.table is None else self.table[out]

    def _read(self, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray) -> np.ndarray:
        out = np.full((stim.size, neuron.size, trial.size), self.fill, self.values.dtype)
        rows, cell = self.layout.rows_of(stim, neuron, trial)
        out.reshape(-1)[cell] = self.values[rows]
        return out


def _labels(layout: Layout, codes: np.ndarray, distinct: np.ndarray) -> TrialArray:
    """Per-trial strings (codes into ``distinct``), ``""`` where no trial is."""
    table = np.append(distinct, "")
    return TrialArray(layout, codes.astype(np.int32), table.size - 1, table)


def _first_trial(rows, shape: tuple, values: np.ndarray) -> np.ndarray:
    """``(stim, neuron)`` float32: each pair's first trial's value, NaN where the pair has none."""
    out = np.full(shape[:2], np.nan, np.float32)
    first = rows.trial == 0
    out[rows.stim[first], rows.neuron[first]] = values[first]
    return out


def direct_reader(counts: xr.DataArray) -> tuple[SpikeCountArray, tuple[np.ndarray, ...]] | None:
    """The backend array and positions of ``counts`` when it is a plain selection of an ``aa4`` ``spike_count``.

    Plain: chunked by the engine and then only indexed (``sel``, ``isel``,
    slices), never masked or computed on; the positions ``(stim, neuron,
    trial, time)`` are found by label. Anything else gives None: read it
    through dask or numpy as usual.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> array, (stim, neuron, trial, time) = direct_reader(ds.spike_count.isel(neuron=[2, 0]))
    >>> neuron.tolist()
    [2, 0]
    """
    if counts.dims != ("stim", "neuron", "trial", "time"):
        return None
    data = counts.variable._data
    if hasattr(data, "__dask_graph__"):
        graph = data.__dask_graph__()
        layers = getattr(graph, "layers", {})
        if not layers or not all(str(name).startswith(("open_dataset-spike_count", "original-open_dataset-spike_count",
                                                        "getitem-")) for name in layers):
            return None
        found = [v for name, layer in layers.items() if str(name).startswith("original-") for v in layer.values()]
        data = found[0] if len(found) == 1 else None
    while data is not None and not isinstance(data, SpikeCountArray):
        data = getattr(data, "array", None)
    if data is None:
        return None
    layout = data.layout
    stim = pd.Index(layout.stim_labels).get_indexer(np.asarray(counts["stim"].values, str))
    neuron = pd.Index(layout.neuron_labels).get_indexer(np.asarray(counts["neuron"].values, str))
    trial = np.asarray(counts["trial"].values, "i8")
    time = np.rint((np.asarray(counts["time"].values, float) - layout.time[0]) / layout.dt).astype("i8")
    ok = ((stim >= 0).all() and (neuron >= 0).all() and ((trial >= 0) & (trial < layout.shape[2])).all()
          and ((time >= 0) & (time < layout.time.size)).all())
    if not ok or not np.allclose(layout.time[time], counts["time"].values):
        return None
    return data, (stim, neuron, trial, time)


def trial_mean(counts: xr.DataArray, block_bytes: int = 2**24) -> xr.DataArray | None:
    """The NaN-skipping mean over ``trial`` of a plain selection of an ``aa4`` ``spike_count``, from its rows.

    The same values as ``counts.mean("trial")`` (float32), made by
    :meth:`Layout.trial_mean` without the ``(stim, neuron, trial, time)``
    block: lazy in blocks of ``(stim, neuron)`` pairs of about
    ``block_bytes`` of result when ``counts`` is a dask array (one task for
    one neuron or one stimulus), computed now when it is not. None when
    ``counts`` is not a plain selection (see :func:`direct_reader`) or
    selects positions out of order or twice: average it as usual.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> mean = trial_mean(ds.spike_count.isel(neuron=[0]))
    >>> mean.dims
    ('stim', 'neuron', 'time')
    """
    import dask.array as da
    from dask.base import tokenize

    found = direct_reader(counts)
    if found is None or not all(_increasing(p) for p in found[1]):
        return None
    array, (stim, neuron, trial, time) = found
    means = _TrialMeans(array, stim, neuron, trial, time)
    if counts.chunks is None:
        data = means[(slice(None),) * 3]
    else:
        from .dataset import _chunks

        per_pair = max(1, time.size * 4)  # result bytes of one (stim, neuron) pair
        neuron_block = max(1, min(neuron.size, block_bytes // per_pair))
        stim_block = max(1, block_bytes // (neuron_block * per_pair))
        chunks = tuple(_chunks(np.array([size]), block)
                       for size, block in zip(means.shape, (stim_block, neuron_block, max(1, time.size))))
        data = da.from_array(means, chunks=chunks, name="trial-mean-" + tokenize(array.key, *found[1]), lock=False,
                             asarray=False, inline_array=False, meta=np.empty((0, 0, 0), np.float32))
    coords = counts.drop_vars([k for k, v in counts.coords.items() if "trial" in v.dims]).coords
    return xr.DataArray(data, coords=coords, dims=("stim", "neuron", "time"), name=counts.name)


class _TrialMeans:
    """``trial_mean`` of one selection as an array that :func:`dask.array.from_array` slices into blocks.

    Pickles as the backend array's key and the selection's positions, so a
    scheduler receives the positions once, not once per task.
    """

    def __init__(self, array: SpikeCountArray, stim: np.ndarray, neuron: np.ndarray, trial: np.ndarray,
                 time: np.ndarray):
        self.array, self.stim, self.neuron, self.trial, self.time = array, stim, neuron, trial, time
        self.shape, self.dtype, self.ndim = (stim.size, neuron.size, time.size), np.dtype(np.float32), 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        stim, neuron, time = (p[k] for p, k in zip((self.stim, self.neuron, self.time), key))
        return self.array.layout.trial_mean(stim, neuron, self.trial, time)


def _unpickle(key: tuple, shape: tuple) -> SpikeCountArray:
    array = SpikeCountArray.__new__(SpikeCountArray)
    array.key, array._layout, array.shape, array.dtype = key, None, shape, np.dtype(np.float32)
    return array


class DaskArray(BackendArray):
    """A dask array as a backend array: an outer index computes just its part, synchronously.

    The stimulus variables are dask arrays with one task per stimulus; so
    wrapped, ``chunks=`` re-chunks them without nesting a threaded scheduler
    inside a task (which deadlocks in forked DataLoader workers).
    """

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR,
                                                  self._getitem)

    def _getitem(self, key: tuple) -> np.ndarray:
        return np.asarray(self.array[key].compute(scheduler="sync"))


def preferred_chunks(shape: tuple[int, int, int, int], neuron_runs: np.ndarray, chunk_bytes: int) -> dict:
    """Chunks of ``spike_count``: runs of one animal's neurons by runs of stimuli, all trials and bins.

    A chunk holds ``chunk_bytes`` of ``cells = chunk_bytes / (trials * bins * 4)``
    (stim, neuron) pairs, about ``sqrt(cells * N / (2 S))`` neurons by the
    stimuli that fill it: a selection of one neuron (all its stimuli) and
    one of one stimulus (all neurons) both touch tens of chunks rather than
    one of them every chunk of its axis (a task costs about a millisecond of
    dask's time, whatever it reads). Larger chunks would give one neuron's
    selection fewer tasks (a stimulus's costs its bins, whatever the
    chunks), but an array over glibc's largest mmap threshold (32 MB) is
    mapped afresh, page faults and all, each time one is made: at 64 MB,
    binning everything takes 10-20 % longer.

    Examples
    --------
    >>> chunks = preferred_chunks((170, 1343, 22, 3045), np.array([151, 355, 53, 198, 304, 282]), 32 * 2**20)
    >>> max(chunks["stim"]), max(chunks["neuron"])
    (5, 23)
    """
    from .dataset import _chunks

    n_stim, n_neuron, n_trial, n_time = shape
    cells = max(1, chunk_bytes // max(1, n_trial * n_time * 4))
    across = int(np.ceil(np.sqrt(cells * n_neuron / (2 * max(n_stim, 1)))))
    neuron = _chunks(neuron_runs, max(1, min(across, cells, n_neuron or 1)))
    stim = _chunks(np.array([n_stim]), max(1, cells // max(neuron)))
    return {"stim": stim, "neuron": neuron, "trial": n_trial or 1, "time": n_time or 1}


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a netCDF file written by aa4xr (its ``title`` says so)."""
    try:
        with h5py.File(path, "r") as f:
            title = f.attrs.get("title", b"")
    except (OSError, ValueError):
        return False
    return "(aa4xr)" in (title.decode() if isinstance(title, bytes) else str(title))


def is_root(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding AA4 animal folders."""
    from .layout import find_animals

    try:
        return Path(path).is_dir() and bool(find_animals(Path(path)))
    except (OSError, ValueError):
        return False


def _text(values) -> np.ndarray:
    """Strings as fixed-width unicode (``.plot()`` and numpy need them so, not as objects)."""
    values = np.asarray(values, dtype=object)
    return values.astype(str) if values.size else np.array([], dtype="<U1")


def open_root(root, *, animals=None, stim_types=None, sort_types=("single", "multi"), dt: float = 0.005,
              pre: float = 0.0, post: float = 0.0, errors: str = "raise", spectrogram: bool = True,
              waveform: bool = False, audio_fs: float = 24000.0, window_ms: float = 10.0, n_mels: int = 32,
              fmin: float = 0.0, fmax: float | None = None, compression: str = "cubic", chunk_mb: float = 32.0,
              processes: int | None = None, executor=None, progress: bool | None = None,
              rebuild: bool = False) -> xr.Dataset:
    """The backend Dataset of an AA4 root: ``spike_count`` lazily indexed, the rest in memory.

    See :func:`aa4xr.open_aa4` for the parameters; xarray's ``chunks=``
    then wraps ``spike_count`` in dask along its ``preferred_chunks``.
    """
    from .dataset import ATTRS, LABELS, NEURON_COORDS, SORT_TYPES, STIM_COORDS, STIM_TYPES, _collect, \
        export_encoding, index_coords
    from .layout import resolve_root
    from .read import TRIAL_ATTRS
    from .store import cache_dir, check_errors, store_paths
    from . import __version__, _validate

    check_errors(errors)
    _validate.check_grid(dt, pre, post)
    animals = _validate.check_names(animals, "animals")
    sort_types = _validate.check_choices(sort_types, "sort_types", SORT_TYPES)
    stim_types = _validate.check_choices(stim_types, "stim_types", STIM_TYPES)
    chunk_mb = _validate.check_size_mb(chunk_mb, "chunk_mb")
    processes = _validate.check_count(processes, "processes")
    root = resolve_root(root)
    paths = store_paths(root, animals, errors=errors, processes=processes, executor=executor, progress=progress,
                        rebuild=bool(rebuild))
    stims, units, rows, sources = _collect(root, paths, sort_types, stim_types)
    key = (str(root), tuple((a, str(p)) for a, p in paths.items()), None if sort_types is None else tuple(sort_types),
           None if stim_types is None else tuple(stim_types), float(dt), float(pre), float(post))
    layout, rows = _layout_of(rows, key[1], stims, units, dt, pre, post)
    shape, time = layout.shape, layout.time
    n_trials = layout.pair_count.reshape(shape[:2])
    runs = units.groupby("animal", sort=False).size().to_numpy()
    encoding = {**export_encoding(xr.Variable(("stim", "neuron", "trial", "time"),
                                                     np.broadcast_to(np.float32(0), (*shape, time.size)))),
                "preferred_chunks": preferred_chunks((*shape, time.size), runs, int(chunk_mb * 2**20))}
    spike_count = xr.Variable(("stim", "neuron", "trial", "time"),
                              indexing.LazilyIndexedArray(SpikeCountArray(key, layout)), encoding=encoding)
    sn, snt = ("stim", "neuron"), ("stim", "neuron", "trial")
    ds = xr.Dataset(
        {
            "spike_count": spike_count,
            "n_trials": (sn, n_trials),
            **{k: (snt, indexing.LazilyIndexedArray(TrialArray(layout, rows.values[k].astype(np.float32), np.nan)))
               for k in TRIAL_ATTRS},
            **{k: (sn, _first_trial(rows, shape, rows.values[k])) for k in ("zscore", "tstat", "pvalue")},
            **{k: (snt, indexing.LazilyIndexedArray(_labels(layout, *rows.labels[k]))) for k in LABELS},
        },
        coords={
            "stim": _text(stims["md5"]),
            **{k: ("stim", stims[k].to_numpy("f8") if k == "duration" else _text(stims[k])) for k in STIM_COORDS},
            "neuron": _text(units["neuron"]),
            **{k: ("neuron", units[k].to_numpy() if units[k].dtype.kind in "if" else _text(units[k]))
               for k in NEURON_COORDS},
            "trial": np.arange(shape[2]),
            "time": time,
        },
        attrs={
            "title": "CRCNS AA4 zebra-finch auditory responses (aa4xr)",
            "source": "doi:10.6080/K00C4T06",
            "root": str(root), "dt": float(dt), "pre": float(pre), "post": float(post),
            "animals": ",".join(paths), "sort_types": ",".join(sort_types or SORT_TYPES),
            "stim_types": ",".join(stim_types or STIM_TYPES), "aa4xr_version": __version__,
        },
    )
    for name, attrs in ATTRS.items():
        ds[name].attrs.update(attrs)
    if spectrogram or waveform:
        from .stimuli import locate_sounds, stimulus_spectrograms, stimulus_waveforms

        sounds = locate_sounds(sources, stims.set_index("md5")["duration"], cache_dir=cache_dir() / "md5")
        parts = []
        if spectrogram:
            parts.append(stimulus_spectrograms(sounds, time, dt, post, window_ms=window_ms, n_mels=n_mels,
                                               fmin=fmin, fmax=fmax, compression=compression,
                                               cache_dir=cache_dir() / "spectrograms"))
        if waveform:
            parts.append(stimulus_waveforms(sounds, audio_fs=audio_fs))
        for part in parts:  # stimulus variables are coordinates of stim: .where on neurons never multiplies them
            part = part if np.array_equal(part["stim"].values, ds["stim"].values) else part.sel(stim=ds["stim"].values)
            for name, var in part.variables.items():
                if name in ds.variables:
                    continue
                if var.dtype == object:
                    var = xr.Variable(var.dims, _text(var.values), var.attrs)
                elif var.chunks is not None:
                    var = xr.Variable(var.dims, indexing.LazilyIndexedArray(DaskArray(var.data)), var.attrs,
                                      {"preferred_chunks": dict(zip(var.dims, (c[0] for c in var.chunks)))})
                ds.coords[name] = var
    ds["zscore"].attrs["note"] = "first protocol group (by name) of the pair"
    return index_coords(ds)


class AA4BackendEntrypoint(BackendEntrypoint):
    """``engine="aa4"``: an AA4 root (see :func:`aa4xr.open_aa4` for the keywords), or an aa4xr netCDF export."""

    description = "The CRCNS AA4 zebra-finch corpus as one lazy labelled Dataset (aa4xr)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "animals", "stim_types", "sort_types", "dt",
                               "pre", "post", "errors", "spectrogram", "waveform", "audio_fs", "window_ms",
                               "n_mels", "fmin", "fmax", "compression", "chunk_mb", "processes", "executor",
                               "progress", "rebuild")

    def guess_can_open(self, filename_or_obj) -> bool:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        path = Path(filename_or_obj)
        return is_root(path) or (path.suffix in (".nc", ".nc4", ".h5") and path.is_file() and is_export(path))

    def open_dataset(self, filename_or_obj, *, drop_variables=None, **kwargs) -> xr.Dataset:
        path = Path(filename_or_obj)
        if path.is_file():
            if kwargs:
                raise TypeError(f"{path} is a netCDF export: {sorted(kwargs)} apply to an AA4 root only")
            from .dataset import index_coords

            return index_coords(xr.open_dataset(path, engine="h5netcdf", drop_variables=drop_variables))
        return open_root(path, **kwargs).drop_vars(drop_variables or [], errors="ignore")
