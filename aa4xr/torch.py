"""PyTorch adapter: one training item per stimulus, read lazily from an aa4xr Dataset.

``TorchDataset`` turns any Dataset returned by :func:`aa4xr.open_aa4` (after
the user's ``.sel``/``.where``) into a map-style ``torch.utils.data.Dataset``
and ``collate`` batches its items for a ``DataLoader``. ``stimulus_stats``,
``normalize_stimulus`` and ``response_stats`` compute normalisation
statistics on chosen stimuli (a training split) and apply them to all.

Importing this module imports torch; importing ``aa4xr`` never does.

Examples
--------
>>> from torch.utils.data import DataLoader
>>> from aa4xr.torch import TorchDataset, collate
>>> tds = TorchDataset(ds.sel(stim_type="song"))               # doctest: +SKIP
>>> loader = DataLoader(tds, batch_size=8, shuffle=True, collate_fn=collate,
...                     num_workers=4)                          # doctest: +SKIP
>>> batch = next(iter(loader))                                  # doctest: +SKIP
>>> batch["stimulus"].shape, batch["response"].shape            # doctest: +SKIP
(torch.Size([8, 1, 32, 412]), torch.Size([8, 60, 20, 412]))
"""
from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import dask
import numpy as np
import xarray as xr
from dask.array import Array as DaskArray

from .backend import SpikeCountArray, direct_reader

try:
    import torch
except ImportError as err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'aa4xr.torch needs PyTorch: pip install "aa4xr[torch]" '
        "(on a CPU-only machine: pip install torch==2.13.0)"
    ) from err

__all__ = ["TorchDataset", "collate", "stimulus_stats", "normalize_stimulus", "response_stats"]

_STIMULUS_DIMS = {"spectrogram": ("frequency", "time"), "waveform": ("sample",)}
_NUMPY_DTYPES = {torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32),
                 torch.float64: np.dtype(np.float64)}


class TorchDataset(torch.utils.data.Dataset):
    """One item per stimulus that has data among the Dataset's neurons.

    The items follow the Dataset's own order of stimuli, skipping those that
    no selected neuron heard (``n_trials == 0`` for every neuron) and, with
    a warning naming them, those whose stimulus variable is all NaN (no
    sound file: zeros would pass for silence). ``__getitem__`` computes only
    its stimulus's slice (the ``spike_count`` chunks holding it), so an
    epoch over a lazy Dataset holds a batch and a few chunks, never the
    whole Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset from :func:`aa4xr.open_aa4`, after any ``.sel``, ``.isel``
        or ``.where``. Needs ``spike_count``, ``n_trials``, the ``duration``
        coordinate, the ``post`` attribute and the chosen stimulus variable.
    stimulus : {"spectrogram", "waveform", None}, default "spectrogram"
        The input each item carries. ``"spectrogram"`` shares the responses'
        time bins; ``"waveform"`` needs ``open_aa4(waveform=True)``; ``None``
        gives responses only. There is no automatic choice: the input of a
        model does not change because the Dataset gained a variable.
    dtype : torch.dtype, default torch.float32
        Floating dtype of the stimulus and response tensors.

    Attributes
    ----------
    neurons : numpy.ndarray of str
        The neuron labels, in the order of every item's response axis 0.
    stims : numpy.ndarray of str
        The md5 of each item's stimulus, in item order.

    Notes
    -----
    An item is a dict:

    ``"stimulus"``
        ``(1, F, T)`` spectrogram or ``(1, S)`` waveform, ``dtype``. NaN
        (outside the stimulus's window) is replaced by 0, i.e. silence; a
        waveform is cut after its last recorded sample.
    ``"response"``
        ``(N, R, T)`` spike counts, ``dtype``, NaN where there is no data.
        ``N`` is every neuron of the Dataset (a neuron that never heard the
        stimulus is all NaN) so a per-neuron readout sees a fixed order.
        ``R`` is the largest ``n_trials`` of this stimulus among the neurons
        and ``T`` the bins inside its window, ``ds.time[:T]`` (those with
        ``time < duration + post``): the trials and bins cut off are NaN by
        the Dataset's contract.
    ``"mask"``
        ``(N, R, T)`` bool, ``~isnan(response)``.
    ``"coords"``
        ``{name: value}`` for every ``stim`` coordinate (``stim`` md5,
        ``stim_type``, ``call_type``, ``stim_class``, ``duration``, ...), as
        Python scalars.

    How an item is read depends on ``spike_count``:

    - a plain selection of :func:`aa4xr.open_aa4`'s lazy array (``sel``,
      ``isel``, slices): the item's cells are binned from the store in one
      read, without dask. A ``DataLoader`` batch (``__getitems__``, in
      float32) is binned straight into the NaN-padded arrays
      :func:`collate` returns, the items being views of them;
    - any other dask array (e.g. after ``ds.where``): its stimulus's slice is
      computed with dask's synchronous scheduler, in the calling process (a
      thread pool only adds overhead to these few small tasks, and one
      inherited through ``fork`` by DataLoader workers would deadlock);
    - a loaded (numpy) array: the items' cells are copied once, at
      construction, into a buffer of the TorchDataset's own (smaller than
      ``spike_count``: no padding beyond each stimulus's trials and
      window), in ``dtype`` when numpy has it, and their masks computed then
      too. The items are built once, on first use, as views of that buffer:
      a read costs no copy and no conversion, like indexing prebuilt tensors
      (each read returns dicts of its own). ``collate`` copies items into
      the batch, so clone an item's tensors before modifying them in place.

    The ``"stimulus"`` tensors are computed for all items on first use and
    kept, so they too are shared by every read of an item.

    Keep items small by selecting neurons first (e.g. one animal): a
    stimulus heard by one animal otherwise carries NaN rows for all others.

    Variables that ``ds.where`` broadcast along other dimensions (e.g. the
    spectrogram along ``neuron``) are folded back: their non-NaN copies are
    equal, so that value is kept.

    Examples
    --------
    >>> tds = TorchDataset(ds.sel(animal="LblBlu2028M"))         # doctest: +SKIP
    >>> item = tds[0]                                            # doctest: +SKIP
    >>> item["stimulus"].shape, item["response"].shape           # doctest: +SKIP
    (torch.Size([1, 32, 412]), torch.Size([60, 10, 412]))
    >>> item["coords"]["stim_type"]                              # doctest: +SKIP
    'song'
    """

    def __init__(self, ds: xr.Dataset, *, stimulus: str | None = "spectrogram",
                 dtype: torch.dtype = torch.float32) -> None:
        _check_dataset(ds, stimulus)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        n_trials, n_bins = _item_extents(ds)
        keep = n_trials > 0
        if stimulus:
            keep &= _has_stimulus(ds, stimulus, keep)
        self._index = np.flatnonzero(keep)
        self._n_trials, self._n_bins = n_trials[self._index], n_bins[self._index]
        extents = list(zip(self._index.tolist(), self._n_trials.tolist(), self._n_bins.tolist()))
        self._responses = _responses(ds["spike_count"].transpose("stim", "neuron", "trial", "time"), extents,
                                     _NUMPY_DTYPES.get(dtype))
        self._stimulus = _fold(ds[stimulus], ("stim", *_STIMULUS_DIMS[stimulus])).data if stimulus else None
        self._stimulus_done: list[torch.Tensor] = []  # small next to the responses: read once per process
        self._kept: list[dict[str, Any]] = []  # a loaded spike_count's items, built on first use
        self._coords = {name: c.values[self._index].tolist() for name, c in ds.coords.items()
                        if c.dims == ("stim",)}
        self.stimulus, self.dtype = stimulus, dtype
        self.neurons = ds["neuron"].values
        self.stims = ds["stim"].values[self._index]

    def __len__(self) -> int:
        return self._index.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(self._responses, _Loaded):
            if not self._kept:  # views of _Loaded's buffers: no copy, and no work left per read
                self._kept = [self._item(k) for k in range(len(self))]
            item = self._kept[index]
            return {**item, "coords": dict(item["coords"])}  # the kept dicts stay as they are
        return self._item(index)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The items of one batch (a ``DataLoader`` asks for them so).

        Over the ``aa4`` backend array in float32, the batch is binned
        straight into one NaN-padded ``(B, N, R, T)`` array, of which the
        items are views, and :func:`collate` takes it as it is instead of
        copying the items into a new one. Otherwise the items one by one.
        """
        binned = isinstance(self._responses, _Binned) and self.dtype == torch.float32 and len(indices) > 0
        extents = [self._responses.extents[i] for i in indices] if binned else []
        padded = self._responses.padded(extents) if extents else None
        if padded is None:
            return [self[i] for i in indices]
        response, mask = torch.from_numpy(padded), torch.from_numpy(_mask(padded))
        items = _PaddedItems(self._item(i, (response[b, :, :r, :t], mask[b, :, :r, :t]))
                             for b, (i, (_, r, t)) in enumerate(zip(indices, extents)))
        items.response, items.mask = response, mask
        return items

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_kept": []}  # views: a worker rebuilds them on its own copy of the buffers

    def _item(self, index: int, read: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """Item ``index``, read and converted (or from ``read``, its response and mask tensors)."""
        if read is None:
            values, mask = self._responses(index)
            read = torch.from_numpy(values).to(self.dtype), torch.from_numpy(mask)
        item = {"response": read[0], "mask": read[1],
                "coords": {name: labels[index] for name, labels in self._coords.items()}}
        if self.stimulus:
            item["stimulus"] = self._stimulus_of(index)
        return item

    def _stimulus_of(self, index: int) -> torch.Tensor:
        """The stimulus input of item ``index``: every item's computed together on first use, then kept."""
        if not self._stimulus_done:
            parts = [self._stimulus[i, :, :n] if self.stimulus == "spectrogram" else self._stimulus[i]
                     for i, n in zip(self._index.tolist(), self._n_bins.tolist())]
            if any(isinstance(p, DaskArray) for p in parts):
                in_worker = torch.utils.data.get_worker_info() is not None  # no thread pool in a forked worker
                parts = dask.compute(*parts, scheduler="synchronous" if in_worker else None)
            self._stimulus_done = [
                torch.from_numpy(_stimulus_values(np.asarray(p), self.stimulus)).to(self.dtype)[None] for p in parts]
        return self._stimulus_done[index]

    def __repr__(self) -> str:
        return (f"TorchDataset({len(self)} stimuli, {self.neurons.size} neurons, "
                f"stimulus={self.stimulus!r}, dtype={self.dtype})")


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`TorchDataset` items for a ``DataLoader`` (``collate_fn=collate``).

    Parameters
    ----------
    batch : sequence of dict
        Items from :class:`TorchDataset`.

    Returns
    -------
    dict
        ``"stimulus"`` ``(B, 1, F, T)`` or ``(B, 1, S)``, zero-padded on the
        right (never NaN; present when the items have a stimulus);
        ``"response"`` ``(B, N, R, T)`` NaN-padded along trial and time to the
        batch maximum; ``"mask"`` ``~isnan(response)``; ``"length"`` ``(B,)``
        int64, each item's number of time bins before padding; ``"coords"`` a
        dict of lists, ``{name: [value of item 0, value of item 1, ...]}``
        (torch's ``default_collate`` convention for strings).

    Examples
    --------
    >>> loader = DataLoader(tds, batch_size=2, collate_fn=collate)  # doctest: +SKIP
    >>> batch = next(iter(loader))                                  # doctest: +SKIP
    >>> batch["coords"]["stim_type"]                                # doctest: +SKIP
    ['song', 'call']
    """
    padded = isinstance(batch, _PaddedItems)  # binned into one padded array already (__getitems__)
    out = {"response": batch.response if padded else _pad([item["response"] for item in batch], float("nan")),
           "mask": batch.mask if padded else _pad([item["mask"] for item in batch], False),
           "length": torch.tensor([item["response"].shape[-1] for item in batch]),
           "coords": {name: [item["coords"][name] for item in batch] for name in batch[0]["coords"]}}
    if "stimulus" in batch[0]:
        out["stimulus"] = _pad([item["stimulus"] for item in batch], 0.0)
    return out


def stimulus_stats(ds: xr.Dataset, stims: Any = None) -> xr.Dataset:
    """Per-frequency mean and standard deviation of the spectrogram.

    NaN-aware: bins outside a stimulus's window do not count; the silence
    inside it (``pre``/``post``) does.

    Parameters
    ----------
    ds : xarray.Dataset
        An aa4xr Dataset with ``spectrogram`` ``(stim, frequency, time)``.
    stims : optional
        The stimuli to compute on (e.g. a training split), anything
        ``ds.sel(stim=...)`` accepts; all of ``ds``'s stimuli by default.

    Returns
    -------
    xarray.Dataset
        ``mean`` and ``std`` ``(frequency)``, computed, with the ``stim``
        coordinate of the stimuli used; ready for ``to_netcdf``.

    Examples
    --------
    >>> stats = stimulus_stats(ds, stims=train_md5s)   # doctest: +SKIP
    >>> ds = normalize_stimulus(ds, stats)             # doctest: +SKIP
    >>> stats.to_netcdf("spectrogram_stats.nc")        # doctest: +SKIP
    """
    part = ds if stims is None else ds.sel(stim=stims)
    spec = _fold(part["spectrogram"], ("stim",) + _STIMULUS_DIMS["spectrogram"])
    units = part["spectrogram"].attrs.get("units", "")
    return _moments(spec, ("stim", "time"), units, "spectrogram").assign_coords(stim=part["stim"].values)


def normalize_stimulus(ds: xr.Dataset, stats: xr.Dataset) -> xr.Dataset:
    """Standardise the spectrogram of every stimulus with :func:`stimulus_stats`.

    ``(spectrogram - mean) / std`` per frequency, lazily; NaN outside the
    windows stays NaN. A band with ``std == 0`` is only centred. Afterwards a
    0 (what :class:`TorchDataset` and :func:`collate` put outside windows)
    is the training mean, not silence.

    Parameters
    ----------
    ds : xarray.Dataset
        An aa4xr Dataset.
    stats : xarray.Dataset
        From :func:`stimulus_stats` (possibly saved and re-opened), on the
        same ``frequency`` bands.

    Returns
    -------
    xarray.Dataset
        ``ds`` with the standardised ``spectrogram`` (``units`` ``"1"``).

    Examples
    --------
    >>> ds = normalize_stimulus(ds, stimulus_stats(ds, stims=train_md5s))  # doctest: +SKIP
    """
    if not np.array_equal(ds["frequency"].values, stats["frequency"].values):
        raise ValueError("stats were computed on other frequency bands than ds's")
    std = stats["std"].where(stats["std"] > 0, 1.0)
    spec = (ds["spectrogram"] - stats["mean"]) / std
    long_name = ds["spectrogram"].attrs.get("long_name", "spectrogram")
    spec.attrs = {**ds["spectrogram"].attrs, "units": "1",
                  "long_name": f"{long_name}, standardised per frequency"}
    return ds.assign(spectrogram=spec)


def response_stats(ds: xr.Dataset, stims: Any = None) -> xr.Dataset:
    """Per-neuron mean and standard deviation of ``spike_count`` (spikes per bin).

    NaN-aware over stimuli, trials and time bins. Counts are left as counts
    (a Poisson loss needs them); use ``mean`` to initialise a readout's bias
    (``log(mean)`` for a Poisson model) or ``std`` to scale targets of an MSE
    loss. The order of ``neuron`` is that of :attr:`TorchDataset.neurons`.
    Reads every selected stimulus once, chunk by chunk.

    Parameters
    ----------
    ds : xarray.Dataset
        An aa4xr Dataset.
    stims : optional
        The stimuli to compute on, anything ``ds.sel(stim=...)`` accepts;
        all by default.

    Returns
    -------
    xarray.Dataset
        ``mean`` and ``std`` ``(neuron)``, computed, NaN for a neuron without
        data on these stimuli, with the ``stim`` coordinate of the stimuli used.

    Examples
    --------
    >>> stats = response_stats(ds, stims=train_md5s)                     # doctest: +SKIP
    >>> bias = torch.log(torch.as_tensor(stats["mean"].values) + 1e-3)   # doctest: +SKIP
    """
    part = ds if stims is None else ds.sel(stim=stims)
    counts = part["spike_count"]
    return _moments(counts, ("stim", "trial", "time"), "1", "spike count per bin").assign_coords(
        stim=part["stim"].values)


def _check_dataset(ds: xr.Dataset, stimulus: str | None) -> None:
    if stimulus is not None and stimulus not in _STIMULUS_DIMS:
        raise ValueError(f"stimulus must be 'spectrogram', 'waveform' or None, got {stimulus!r}")
    needed = {"spike_count": ds.data_vars, "n_trials": ds.data_vars, "duration": ds.coords,
              "post": ds.attrs}
    if stimulus:
        needed[stimulus] = ds.variables  # a coordinate of stim in open_aa4's Dataset
    missing = [name for name, where in needed.items() if name not in where]
    if missing:
        hint = " (open_aa4(..., waveform=True) adds it)" if "waveform" in missing else ""
        raise ValueError(f"not an aa4xr Dataset: missing {', '.join(missing)}{hint}")
    dropped = {"stim", "neuron", "trial", "time"} - set(ds["spike_count"].dims)
    if dropped:
        raise ValueError(f"spike_count lost its {sorted(dropped)} dimension(s) to a scalar selection; "
                         "select with a list instead, e.g. ds.sel(neuron=[label])")
    if np.any(np.diff(ds["time"].values) <= 0):
        raise ValueError("the time coordinate must be increasing")


_Extent = tuple[int, int, int]  # an item's stimulus position, number of trials and of time bins


def _responses(counts: xr.DataArray, extents: list[_Extent],
               dtype: np.dtype | None = None) -> _Loaded | _Binned | _Computed:
    """The reader of the items' ``(values, mask)`` for ``spike_count`` ``(stim, neuron, trial, time)``.

    A loaded ``spike_count`` is copied in ``dtype`` (the items' own, when numpy has it).
    """
    direct = direct_reader(counts)
    if direct:
        return _Binned(*direct, extents)
    if isinstance(counts.data, DaskArray):
        return _Computed(counts.data, extents)
    return _Loaded(np.asarray(counts.data), extents, dtype)


class _Loaded:
    """Items of an in-memory ``spike_count``: copied once into one buffer, their masks into another.

    The buffers hold each item's cells back to back, contiguous (which
    ``collate`` copies ~20% faster than strided views of the Dataset's
    array) and without the Dataset's padding beyond each stimulus's trials
    and window. An item is a view of them: no copy per read.

    Examples
    --------
    >>> counts = np.array([[[[1.0, np.nan], [np.nan, np.nan]]]], np.float32)  # (stim, neuron, trial, time)
    >>> values, mask = _Loaded(counts, [(0, 1, 2)])(0)
    >>> values.tolist(), mask.tolist()
    ([[[1.0, nan]]], [[[True, False]]])
    """

    def __init__(self, counts: np.ndarray, extents: list[_Extent], dtype: np.dtype | None = None) -> None:
        shapes = [(counts.shape[1], r, t) for _, r, t in extents]
        self.values, self.masks = _packed(shapes, dtype or counts.dtype), _packed(shapes, np.dtype(bool))
        for values, mask, (s, r, t) in zip(self.values, self.masks, extents):
            values[...] = counts[s, :, :r, :t]
            np.equal(values, values, out=mask)

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.values[index], self.masks[index]


def _packed(shapes: list[tuple[int, ...]], dtype: np.dtype) -> list[np.ndarray]:
    """Empty arrays of these shapes, back to back in one buffer, each starting on a 64-byte line.

    Aligned as a tensor of its own would be (numpy's large allocations are
    not), which copies faster.

    Examples
    --------
    >>> [a.ctypes.data % 64 for a in _packed([(3,), (2, 5)], np.dtype(np.float32))]
    [0, 0]
    """
    sizes = np.array([np.prod(shape) for shape in shapes], np.int64)
    line = max(1, 64 // dtype.itemsize)
    spans = -(-sizes // line) * line
    buffer = np.empty(int(spans.sum()) + line, dtype)
    buffer = buffer[(-buffer.ctypes.data % 64) // dtype.itemsize:]
    return [buffer[start:start + size].reshape(shape)
            for start, size, shape in zip((np.cumsum(spans) - spans).tolist(), sizes.tolist(), shapes)]


class _Binned:
    """Items of a plain selection of the ``aa4`` backend array: each bins its cells from the store in one read.

    The positions of the selection are resolved once; a read calls
    :meth:`aa4xr.backend.Layout.bin` with sorted positions, and restores
    the selection's order of neurons (or, for unsorted trials or time bins,
    goes through the array's general indexing).
    """

    def __init__(self, array: SpikeCountArray, positions: tuple[np.ndarray, ...], extents: list[_Extent]) -> None:
        stim, self.neuron, self.trial, self.time = positions
        self.array, self.extents = array, [(int(stim[s]), r, t) for s, r, t in extents]
        self.unique, order = np.unique(self.neuron, return_inverse=True)
        self.order = None if np.array_equal(self.unique, self.neuron) else order.ravel()
        self.sorted = bool(np.all(np.diff(self.trial) > 0) and np.all(np.diff(self.time) > 0))

    def padded(self, extents: list[_Extent]) -> np.ndarray | None:
        """Items of these extents binned into one ``(B, N, R, T)`` array, NaN past each item's trials and bins.

        Each item's place is filled by one :meth:`aa4xr.backend.Layout.bin`
        over the batch's most trials and bins: what lies beyond its own has
        no row or lies past its window, so it is NaN as padding would be.
        None when the selection's neurons, trials or bins are out of order.
        """
        if not self.sorted or self.order is not None:
            return None
        n_trials, n_bins = max(r for _, r, _ in extents), max(t for _, _, t in extents)
        out = np.empty((len(extents), self.unique.size, n_trials, n_bins), np.float32)
        for b, (s, _, _) in enumerate(extents):
            self.array.layout.bin(np.array([s]), self.unique, self.trial[:n_trials], self.time[:n_bins],
                                  out=out[b:b + 1])
        return out

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s, r, t = self.extents[index]
        if self.sorted:
            values = self.array.layout.bin(np.array([s]), self.unique, self.trial[:r], self.time[:t])[0]
            values = values if self.order is None else values[self.order]
        else:
            values = self.array._getitem((s, self.neuron, self.trial[:r], self.time[:t]))
        return values, _mask(values)


class _PaddedItems(list):
    """Items that are views of one NaN-padded batch, ``response`` and ``mask`` ``(B, N, R, T)`` tensors."""

    response: torch.Tensor
    mask: torch.Tensor


class _Computed:
    """Items of a dask ``spike_count``: each computes its stimulus's slice with the synchronous scheduler."""

    def __init__(self, counts: DaskArray, extents: list[_Extent]) -> None:
        self.counts, self.extents = counts, extents

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s, r, t = self.extents[index]
        values = self.counts[s, :, :r, :t].compute(scheduler="synchronous")
        return values, _mask(values)


def _mask(values: np.ndarray) -> np.ndarray:
    """``~isnan(values)`` in one pass (NaN is the only value unequal to itself)."""
    return np.equal(values, values)


def _item_extents(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per stimulus: the most trials any neuron has, and the bins inside the window."""
    n_trials = np.nan_to_num(ds["n_trials"].transpose("stim", "neuron").values.astype(float))
    n_trials = np.minimum(n_trials.max(axis=1, initial=0), ds.sizes["trial"]).astype(int)
    ends = ds["duration"].values + float(ds.attrs["post"])
    n_bins = (ds["time"].values[None, :] < ends[:, None]).sum(axis=1)
    return n_trials, n_bins


def _has_stimulus(ds: xr.Dataset, stimulus: str, wanted: np.ndarray) -> np.ndarray:
    """Per stimulus: is ``stimulus`` recorded at all? Warns naming the wanted ones that are not."""
    values = ds[stimulus]
    recorded = values.notnull().any([d for d in values.dims if d != "stim"]).values
    missing = ds["stim"].values[wanted & ~recorded]
    if missing.size:
        warnings.warn(f"TorchDataset skips {missing.size} stimuli whose {stimulus} is all NaN "
                      f"(no sound file): {', '.join(map(str, missing))}", stacklevel=3)
    return recorded


def _fold(da: xr.DataArray, dims: tuple[Hashable, ...]) -> xr.DataArray:
    """Fold dimensions that ``ds.where`` broadcast onto ``da`` back.

    Its non-NaN copies are equal, so their NaN-skipping maximum is the value.
    """
    extra = [d for d in da.dims if d not in dims]
    return (da.max(extra) if extra else da).transpose(*dims)


def _stimulus_values(values: np.ndarray, name: str) -> np.ndarray:
    """One stimulus's input: NaN as 0 (silence); a waveform cut after its last recorded sample."""
    if name == "waveform":
        recorded = np.flatnonzero(~np.isnan(values))
        values = values[: recorded[-1] + 1 if recorded.size else 0]
    return np.where(np.isnan(values), 0.0, values)


def _pad(tensors: list[torch.Tensor], value: float | bool) -> torch.Tensor:
    """Stack, padding each on the right with ``value``: every element of the batch written once.

    Through numpy when it can: these copies are too small for torch's
    intra-op threads, which on a busy machine only slow them down.

    Examples
    --------
    >>> _pad([torch.ones(1, 2), torch.zeros(2, 1)], -1.0)
    tensor([[[ 1.,  1.],
             [-1., -1.]],
    <BLANKLINE>
            [[ 0., -1.],
             [ 0., -1.]]])
    """
    shape = (len(tensors), *map(max, zip(*(t.shape for t in tensors))))
    try:
        parts = [t.numpy() for t in tensors]
    except (TypeError, RuntimeError):  # a dtype numpy has not (e.g. bfloat16), or not on the CPU
        out = tensors[0].new_empty(shape)
        _fill(out, tensors, value)
        return out
    out = np.empty(shape, parts[0].dtype)
    _fill(out, parts, value)
    return torch.from_numpy(out)


def _fill(out: Any, parts: list[Any], value: float | bool) -> None:
    """``out[b]`` = ``parts[b]`` at its start and ``value`` in the rest (numpy arrays or tensors alike)."""
    full = tuple(out.shape[1:])
    for row, part in zip(out, parts):
        shape = tuple(part.shape)
        inside = tuple(map(slice, shape))
        row[inside] = part
        if shape != full:
            for axis, n in enumerate(shape):  # the rest: inside before this axis, beyond it along it
                if n < full[axis]:
                    row[inside[:axis] + (slice(n, None),)] = value


def _moments(da: xr.DataArray, dims: tuple[str, ...], units: str, what: str) -> xr.Dataset:
    with warnings.catch_warnings():  # a neuron or band without data is NaN, no warning needed
        warnings.filterwarnings("ignore", "invalid value|Mean of empty|Degrees of freedom", RuntimeWarning)
        stats = xr.Dataset({"mean": da.mean(dims), "std": da.std(dims)}).compute()
    stats["mean"].attrs = {"units": units, "long_name": f"mean {what}"}
    stats["std"].attrs = {"units": units, "long_name": f"standard deviation of {what}"}
    return stats
