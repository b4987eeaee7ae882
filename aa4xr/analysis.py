"""Analysis of an AA4 Dataset: PSTHs, coverage, tidy tables, response strength, reliability.

Every function takes the Dataset of :func:`aa4xr.open_aa4` (or any selection
of it), checks that it holds what the function needs, and returns labelled
xarray or pandas objects with CF ``units`` and ``long_name``. NaN is the mask
throughout: a bin, trial or pair without data never counts as zero. When
``spike_count`` is a dask array the xarray results stay lazy (call
``.compute()``); only :func:`to_frame` computes, and only the reductions it
needs; :func:`drop_empty` reads ``n_trials`` alone. ``ds.aa4.<name>(...)`` calls ``<name>(ds, ...)``.

References
----------
Hsu, Borst & Theunissen (2004). Quantifying variability in neural responses
and its application for the validation of model predictions. Network 15:91-109.
Sahani & Linden (2003). How linear are auditory cortical responses? NIPS 15.
Schoppe, Harper, Willmore, King & Schnupp (2016). Measuring the performance of
neural models. Front. Comput. Neurosci. 10:10. doi:10.3389/fncom.2016.00010
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import signal, special
from scipy.ndimage import convolve1d

from .backend import trial_mean

__all__ = ["psth", "smooth", "mask", "coverage", "drop_empty", "trial_rates", "to_frame",
           "response_strength", "reliability"]

_DIMS = {
    "spike_count": ("stim", "neuron", "trial", "time"),
    "n_trials": ("stim", "neuron"),
    "bg_rate": ("stim", "neuron", "trial"),
    "duration": ("stim",),
}
_BASELINES = ("auto", "pre", "files")


def _require(ds: xr.Dataset, func: str, *names: str) -> None:
    """Fail with a message naming what ``func`` needs and ``ds`` lacks."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{func}() takes the xarray.Dataset of aa4xr.open_aa4(), got {type(ds).__name__}")
    for name in names:
        if name not in ds.variables:
            raise ValueError(f"{func}() needs the variable {name!r} {_DIMS[name]} of aa4xr.open_aa4(); "
                             f"the Dataset holds {sorted(map(str, ds.variables))}")
        lacking = [d for d in _DIMS[name] if d not in ds[name].dims]
        if lacking:
            raise ValueError(f"{func}() needs {name!r} with dimensions {_DIMS[name]}, it lacks {lacking}: "
                             "select with a list or slice (e.g. .isel(time=[0])) to keep a dimension")


def _dt(obj: xr.Dataset | xr.DataArray) -> float:
    """The bin width: the ``dt`` attribute, else the step of an evenly spaced ``time``."""
    if "dt" in obj.attrs:
        return float(obj.attrs["dt"])
    step = np.diff(np.asarray(obj["time"], float))
    if step.size == 0 or not np.allclose(step, step[0]):
        raise ValueError("cannot tell the bin width: no 'dt' attribute, and 'time' does not hold "
                         "2 or more evenly spaced bins; pass dt=")
    return float(step[0])


def _taps(smooth_ms: float, window, dt: float) -> np.ndarray:
    """Smoothing weights: ``window`` over the odd number of bins 2*floor(L/2)+1, L = smooth_ms/dt."""
    if smooth_ms < 0:
        raise ValueError(f"smooth_ms must be >= 0, got {smooth_ms}")
    n = 2 * int(round(smooth_ms / 1e3 / dt, 9) // 2) + 1
    taps = signal.get_window(window, n + 2, fftbins=False)[1:-1]
    if not taps[n // 2] > 0:
        raise ValueError(f"window {window!r} must weigh its centre bin")
    return taps / taps.sum()


def _smooth_kernel(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Normalised convolution along the last axis: NaN bins weigh nothing and stay NaN."""
    valid = np.isfinite(x)
    num = convolve1d(np.where(valid, x, 0).astype(float), taps, axis=-1, mode="constant")
    den = convolve1d(valid.astype(float), taps, axis=-1, mode="constant")
    out = np.full(x.shape, np.nan, np.result_type(x.dtype, np.float32))
    return np.divide(num, den, out=out, where=valid)


def smooth(da: xr.DataArray, smooth_ms: float | None = 21.0, window="hann", *,
           dt: float | None = None) -> xr.DataArray:
    """Smooth along ``time`` with a normalised window that never leaks across a NaN edge.

    Each valid bin becomes the weighted mean of the valid bins under the
    window, ``sum(w * x * valid) / sum(w * valid)`` (normalised convolution);
    NaN bins stay NaN and weigh nothing, so a stimulus's end or a trial's
    recorded span is never blurred into or out of.

    Parameters
    ----------
    da : xarray.DataArray
        Anything with a ``time`` dimension, e.g. a PSTH or ``spike_count``.
    smooth_ms : float or None
        Window length in milliseconds; None or 0 returns ``da`` unchanged.
        The window spans the odd number of bins ``2*floor(L/2) + 1``,
        ``L = smooth_ms / (1000 * dt)`` (5 bins for 21 ms at 5 ms, 21 at 1 ms).
    window : str or tuple
        Any :func:`scipy.signal.get_window` window, taken symmetric over that
        many bins plus two and without its two end points (zero for "hann",
        as MATLAB's ``hanning``), normalised to sum 1. The default "hann" is
        the 21 ms Hanning window of Hsu, Borst & Theunissen (2004).
    dt : float, optional
        Bin width in seconds (default: ``da.attrs["dt"]`` or the ``time`` step).

    Returns
    -------
    xarray.DataArray
        Same dimensions, dtype and laziness; dask input is rechunked to one
        chunk along ``time`` only when it has several.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> x = xr.DataArray([0., 0., 4., 0., np.nan, 8.], dims="time", coords={"time": np.arange(6) * 0.005})
    >>> smooth(x, 15.0).values.round(2)
    array([0.  , 1.  , 2.  , 1.33,  nan, 8.  ])
    """
    if not isinstance(da, xr.DataArray) or "time" not in da.dims:
        raise TypeError("smooth() takes an xarray.DataArray with a 'time' dimension")
    if not smooth_ms:
        return da
    taps = _taps(smooth_ms, window, _dt(da) if dt is None else dt)
    if da.chunks is not None and len(da.chunks[da.get_axis_num("time")]) > 1:
        da = da.copy(data=da.data.rechunk({da.get_axis_num("time"): -1}))  # data only, not coords
    out = xr.apply_ufunc(_smooth_kernel, da, kwargs={"taps": taps}, input_core_dims=[["time"]],
                         output_core_dims=[["time"]], dask="parallelized",
                         output_dtypes=[np.result_type(da.dtype, np.float32)], keep_attrs=True)
    return out.transpose(*da.dims).assign_attrs(smooth_ms=float(smooth_ms), window=str(window))


def _mean(da: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Mean over ``dim`` skipping NaN; NaN (quietly) where nothing is left."""
    n = da.count(dim)
    return da.sum(dim) / n.where(n > 0)


def psth(ds: xr.Dataset, smooth_ms: float | None = 21.0, window="hann",
         units: str = "rate") -> xr.DataArray:
    """Peri-stimulus time histogram: the NaN-aware mean of ``spike_count`` over trials.

    Each bin averages the trials that hold data there (a pair with 9 trials
    averages 9); it is NaN where no trial does. Then :func:`smooth` along
    ``time`` (never across a NaN edge). A plain selection of the ``aa4``
    engine's ``spike_count`` is averaged straight from the store's rows
    (:func:`aa4xr.backend.trial_mean`: the same values, without the
    ``(stim, neuron, trial, time)`` block); anything else through xarray.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    smooth_ms, window
        See :func:`smooth`; ``smooth_ms=None`` or 0 gives the raw mean.
    units : {"rate", "count"}
        Spikes per second, or spikes per bin.

    Returns
    -------
    xarray.DataArray
        ``psth`` (stim, neuron, time), lazy when ``spike_count`` is.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4(pre=0.1)
    >>> rate = psth(ds)                          # or ds.aa4.psth()
    >>> rate.dims, rate.attrs["units"]
    (('stim', 'neuron', 'time'), 'Hz')
    """
    _require(ds, "psth", "spike_count")
    if units not in ("rate", "count"):
        raise ValueError(f"units must be 'rate' or 'count', got {units!r}")
    dt = _dt(ds)
    counts = ds["spike_count"]
    mean = trial_mean(counts)  # from the store's rows when counts is a plain selection of the aa4 engine's
    mean = _mean(counts, "trial").astype(counts.dtype) if mean is None else mean
    out = smooth(mean, smooth_ms, window, dt=dt)
    out = out / dt if units == "rate" else out
    attrs = ({"long_name": "trial-averaged firing rate", "units": "Hz"} if units == "rate"
             else {"long_name": "trial-averaged spike count per bin", "units": "1"})
    return out.astype(counts.dtype).rename("psth").assign_attrs(
        **attrs, cell_methods="trial: mean", smooth_ms=float(smooth_ms or 0), window=str(window))


def mask(ds: xr.Dataset) -> xr.DataArray:
    """Which (stim, neuron) pairs hold data: ``n_trials > 0`` (False where NaN).

    Examples
    --------
    >>> import aa4xr
    >>> heard = mask(aa4xr.open_aa4())            # or ds.aa4.mask()
    >>> heard.dtype, heard.dims
    (dtype('bool'), ('stim', 'neuron'))
    """
    _require(ds, "mask", "n_trials")
    return (ds["n_trials"] > 0).rename("heard").assign_attrs(
        long_name="the neuron heard the stimulus (n_trials > 0)")


def coverage(ds: xr.Dataset) -> xr.Dataset:
    """How much of the (stim, neuron) grid holds data.

    Returns
    -------
    xarray.Dataset
        ``stim_fraction`` (stim): fraction of the neurons that heard each
        stimulus; ``neuron_fraction`` (neuron): fraction of the stimuli each
        neuron heard; scalars ``pair_fraction``, ``heard_pairs`` and
        ``trials`` (total trials). The stim and neuron coordinates come
        along, ready for ``groupby``.

    Examples
    --------
    >>> import aa4xr
    >>> cov = coverage(aa4xr.open_aa4())           # or ds.aa4.coverage()
    >>> frac = cov.neuron_fraction.groupby("animal").mean()
    """
    heard = mask(ds)
    one = {"units": "1"}
    return xr.Dataset({
        "stim_fraction": heard.mean("neuron").assign_attrs(
            long_name="fraction of the neurons that heard the stimulus", **one),
        "neuron_fraction": heard.mean("stim").assign_attrs(
            long_name="fraction of the stimuli the neuron heard", **one),
        "pair_fraction": heard.mean().assign_attrs(long_name="fraction of (stim, neuron) pairs heard", **one),
        "heard_pairs": heard.sum().assign_attrs(long_name="(stim, neuron) pairs heard", **one),
        "trials": ds["n_trials"].where(heard).sum().astype("i8").assign_attrs(
            long_name="trials in all pairs", **one),
    })


def drop_empty(ds: xr.Dataset) -> xr.Dataset:
    """Drop the stimuli no remaining neuron heard and the neurons that heard no remaining stimulus.

    Uses ``n_trials`` only, so it never computes ``spike_count``. One pass is
    already stable: a dropped stimulus held no data for any neuron, so no
    neuron loses data by its removal (and vice versa).

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> one = drop_empty(ds.sel(neuron=ds.neuron[:1]))    # or ...aa4.drop_empty()
    >>> bool(mask(one).all())
    True
    """
    heard = np.asarray(mask(ds).transpose("stim", "neuron"))
    return ds.isel(stim=heard.any(axis=1), neuron=heard.any(axis=0))


def _baseline(ds: xr.Dataset, baseline: str) -> str:
    if baseline not in _BASELINES:
        raise ValueError(f"baseline must be one of {_BASELINES}, got {baseline!r}")
    has_pre = bool((ds["time"] < 0).any())
    if baseline == "auto":
        return "pre" if has_pre else "files"
    if baseline == "pre" and not has_pre:
        raise ValueError("baseline='pre' needs pre-stimulus bins (time < 0): open with "
                         "aa4xr.open_aa4(pre=...) or keep them in the selection, or use baseline='files'")
    return baseline


def _window_rate(counts: xr.DataArray, inside: xr.DataArray, dt: float) -> xr.DataArray:
    """Spikes per second over the valid bins ``inside`` a window, per trial; NaN without any."""
    counts = counts.where(inside)
    n = counts.count("time")
    return counts.sum("time") / (n.where(n > 0) * dt)


def trial_rates(ds: xr.Dataset, baseline: str = "auto") -> xr.Dataset:
    """Evoked and baseline firing rate of every trial.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    baseline : {"auto", "pre", "files"}
        "pre": the bins starting before onset (``time < 0``, i.e.
        ``[-pre, 0)``); "files": the files' ``bg_rate``; "auto": "pre" when
        ``time`` holds such bins, else "files".

    Returns
    -------
    xarray.Dataset
        ``evoked_rate`` and ``baseline_rate`` (stim, neuron, trial) in Hz.
        The evoked rate is the spike count over the trial's valid bins
        starting in ``[0, duration)`` divided by their total width; NaN where
        the trial has no such bin (no trial, or none selected).

    Examples
    --------
    >>> import aa4xr
    >>> rates = trial_rates(aa4xr.open_aa4(pre=0.1))    # or ds.aa4.trial_rates()
    >>> rates.attrs["baseline"]
    'pre'
    """
    _require(ds, "trial_rates", "spike_count", "duration")
    source = _baseline(ds, baseline)
    if source == "files":
        _require(ds, "trial_rates", "bg_rate")
    dt, counts, time = _dt(ds), ds["spike_count"], ds["time"]
    evoked = _window_rate(counts, (time >= 0) & (time < ds["duration"]), dt)
    base = _window_rate(counts, time < 0, dt) if source == "pre" else ds["bg_rate"]
    return xr.Dataset(
        {"evoked_rate": evoked.assign_attrs(long_name="firing rate in [0, duration)", units="Hz"),
         "baseline_rate": base.assign_attrs(
             long_name="pre-stimulus firing rate" if source == "pre" else "background rate (from the files)",
             units="Hz")},
        attrs={"baseline": source})


def to_frame(ds: xr.Dataset, baseline: str = "auto") -> pd.DataFrame:
    """A tidy table: one row per heard (stim, neuron) pair.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    baseline : {"auto", "pre", "files"}
        See :func:`trial_rates`.

    Returns
    -------
    pandas.DataFrame
        Columns ``stim``, ``neuron``, every stim and neuron coordinate,
        ``n_trials``, ``evoked_rate`` and ``baseline_rate`` (Hz, means over
        the trials of :func:`trial_rates`), and the files' ``zscore``,
        ``tstat``, ``pvalue`` when present. Computes only these reductions.

    Examples
    --------
    >>> import aa4xr
    >>> table = to_frame(aa4xr.open_aa4(pre=0.1))       # or ds.aa4.to_frame()
    >>> by_sort = table.groupby("sort_type")["evoked_rate"].mean()
    """
    _require(ds, "to_frame", "spike_count", "n_trials", "duration")
    rates = trial_rates(ds, baseline)
    pairs = xr.Dataset({
        "n_trials": ds["n_trials"],
        "evoked_rate": _mean(rates["evoked_rate"], "trial"),
        "baseline_rate": _mean(rates["baseline_rate"], "trial"),
        **{k: ds[k] for k in ("zscore", "tstat", "pvalue") if k in ds.data_vars},
    })
    stim, neuron = np.nonzero(np.asarray(mask(ds).transpose("stim", "neuron")))
    pairs = pairs.isel(stim=xr.DataArray(stim, dims="pair"), neuron=xr.DataArray(neuron, dims="pair"))
    table = pairs.compute().to_dataframe().reset_index(drop=True)
    coords = [c for d in ("stim", "neuron")
              for c in sorted((c for c in ds.coords if ds[c].dims == (d,)), key=lambda c: c != d)]
    table["n_trials"] = table["n_trials"].astype("i8")
    return table[coords + list(pairs.data_vars)]


def response_strength(ds: xr.Dataset, baseline: str = "auto") -> xr.Dataset:
    """Evoked vs baseline rate per (stim, neuron): paired z-score and t-test over trials.

    With ``d_i`` the evoked minus baseline rate of trial ``i`` (the trials
    where both are defined, ``n >= 2``):
    ``zscore = mean(d) / std(d, ddof=1)``, i.e. the paired z-score
    ``(mu_E - mu_B) / sqrt(var_E + var_B - 2 cov(E, B))``,
    ``tstat = zscore * sqrt(n)`` and ``pvalue`` its two-sided p-value on
    ``n - 1`` degrees of freedom, i.e. :func:`scipy.stats.ttest_rel`. With
    about 10 trials of Poisson-like rates the t distribution is an
    approximation. NaN where ``n < 2`` or ``d`` does not vary.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    baseline : {"auto", "pre", "files"}
        See :func:`trial_rates`.

    Returns
    -------
    xarray.Dataset
        ``rate_change`` (Hz), ``zscore``, ``tstat``, ``pvalue``, ``n_paired``
        per (stim, neuron); lazy when ``spike_count`` is.

    Examples
    --------
    >>> import aa4xr
    >>> strength = response_strength(aa4xr.open_aa4(pre=0.1))   # or ds.aa4.response_strength()
    >>> responsive = (strength.pvalue < 0.05).sum("stim")
    """
    _require(ds, "response_strength", "spike_count", "duration")
    rates = trial_rates(ds, baseline)
    diff = rates["evoked_rate"] - rates["baseline_rate"]
    n = diff.count("trial")
    mean = diff.sum("trial") / n.where(n >= 2)
    sd = np.sqrt(((diff - mean) ** 2).sum("trial") / (n - 1).where(n >= 2))
    z = mean / sd.where(sd > 0)
    t = z * np.sqrt(n)
    p = 2 * xr.apply_ufunc(special.stdtr, n - 1, -abs(t), dask="parallelized", output_dtypes=[float])
    one = {"units": "1"}
    return xr.Dataset(
        {"rate_change": mean.assign_attrs(long_name="mean evoked minus baseline rate", units="Hz"),
         "zscore": z.assign_attrs(long_name="paired z-score, evoked vs baseline", **one),
         "tstat": t.assign_attrs(long_name="paired t statistic, evoked vs baseline", **one),
         "pvalue": p.assign_attrs(long_name="two-sided paired t-test p-value", **one),
         "n_paired": n.assign_attrs(long_name="trials with evoked and baseline rates", **one)},
        attrs={"baseline": rates.attrs["baseline"], "test": "paired t-test over trials"})


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    """Mean over ``axis`` skipping NaN; NaN where nothing is left (quietly)."""
    n = np.sum(~np.isnan(x), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(x, axis=axis) / np.where(n > 0, n, np.nan)


def _nanvar(x: np.ndarray, axis) -> np.ndarray:
    """Population variance over ``axis`` skipping NaN (two passes)."""
    return _nanmean((x - np.expand_dims(_nanmean(x, axis), axis)) ** 2, axis)


def _pearson_time(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis on the points where both are finite; NaN if one is flat."""
    both = ~np.isnan(a) & ~np.isnan(b)
    a, b = np.where(both, a, np.nan), np.where(both, b, np.nan)
    da, db = a - _nanmean(a, -1)[..., None], b - _nanmean(b, -1)[..., None]
    den = np.sqrt(np.nansum(da ** 2, -1) * np.nansum(db ** 2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(da * db, -1) / np.where(den > 0, den, np.nan)


def _moment_sums(x: np.ndarray) -> list[np.ndarray]:
    """Count, sum and sum of squares along the last axis, skipping NaN."""
    return [np.sum(~np.isnan(x), -1).astype(float), np.nansum(x, -1), np.nansum(x ** 2, -1)]


def _reliability_block(counts: np.ndarray, n_trials: np.ndarray, n_min: np.ndarray, dt: float,
                       taps: np.ndarray | None, block_bytes: int = 2**21) -> np.ndarray:
    """:func:`_reliability_stats` over a chunk, a few (stim, neuron) cells at a time.

    The kernel holds about twenty float64 copies of its input, so it runs
    on pieces of about ``block_bytes`` of counts: its memory stays a small
    multiple of that whatever the chunk size.
    """
    s, n, r, t = counts.shape
    out = np.empty((s, n, 12 + 3 * r))
    step = max(1, block_bytes // max(1, r * t * counts.itemsize))
    for i in range(s):
        for j in range(0, n, step):
            out[i:i + 1, j:j + step] = _reliability_stats(counts[i:i + 1, j:j + step], n_trials[i:i + 1, j:j + step],
                                                          n_min[j:j + step], dt, taps)
    return out


def _reliability_stats(counts: np.ndarray, n_trials: np.ndarray, n_min: np.ndarray, dt: float,
                       taps: np.ndarray | None) -> np.ndarray:
    """One (stim, neuron) block of :func:`reliability`: ``(s, n, 12 + 3 R)`` float64.

    Per pair: split-half r, signal power, CCmax; then the sums over time that
    the per-neuron figures add up over stimuli (even/odd counts, sums,
    squares and cross products; the trial sum's and each trial's moments
    on the first ``n_min`` trials).
    """
    s, n, r, _ = counts.shape
    valid = np.arange(r)[None, None, :] < n_trials[:, :, None]
    rate = np.where(valid[..., None], counts.astype("f8"), np.nan) / dt
    support = ((~np.isnan(rate)) | ~valid[..., None]).all(axis=2) & valid.any(axis=2)[..., None]
    y = np.where(support[:, :, None, :], rate, np.nan)
    y = _smooth_kernel(y, taps) if taps is not None else y
    rank, used = np.cumsum(valid, axis=2) - 1, valid.sum(axis=2).astype(float)
    even = _nanmean(np.where((valid & (rank % 2 == 0))[..., None], y, np.nan), 2)
    odd = _nanmean(np.where((valid & (rank % 2 == 1))[..., None], y, np.nan), 2)
    both = ~np.isnan(even) & ~np.isnan(odd)
    e, o = np.where(both, even, 0.0), np.where(both, odd, 0.0)
    pair_stats = [both.sum(-1).astype(float), e.sum(-1), o.sum(-1), (e * e).sum(-1), (o * o).sum(-1), (e * o).sum(-1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        power, ccmax = _ceiling_arrays(y, used)
        kept = valid & (rank < n_min[None, :, None]) & (used >= 2)[..., None]
        yr = np.where(kept[..., None], y, np.nan)
        total = np.where(np.isnan(yr).all(axis=2), np.nan, np.nansum(yr, axis=2))
    out = [_pearson_time(even, odd), power, ccmax, *pair_stats, *_moment_sums(total)]
    return np.concatenate([np.stack(out, -1), np.concatenate(_moment_sums(yr), -1)], -1)


def _ceiling_arrays(y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal power and CCmax of ``y`` (s, n, trial, time) over time, ``n`` used trials."""
    total = np.where(np.isnan(y).all(axis=2), np.nan, np.nansum(y, axis=2))
    var_total = _nanvar(total, -1)
    power = (var_total - np.nansum(_nanvar(y, -1), axis=2)) / np.where(n >= 2, n * (n - 1), np.nan)
    var_mean = var_total / n ** 2
    return power, np.sqrt(np.clip(power, 0, None) / np.where(var_mean > 0, var_mean, np.nan))


def _from_sums(c, s1, s2):
    """Population variance from count, sum and sum of squares (NaN where the count is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / np.where(c > 0, c, np.nan)
        return np.maximum(s2 / np.where(c > 0, c, np.nan) - mean ** 2, 0.0)


def _neuron_figures(sums: np.ndarray, n_min: np.ndarray, n_trial: int) -> np.ndarray:
    """Per neuron split-half r and CCmax ``(2, n)`` from the per-stimulus sums added over stimuli."""
    c, se, so, see, soo, seo = (sums[:, k] for k in range(6))
    tc, ts1, ts2 = (sums[:, 6 + k] for k in range(3))
    trial = sums[:, 9:].reshape(sums.shape[0], 3, n_trial)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = seo - se * so / np.where(c > 0, c, np.nan)
        var_e, var_o = see - se ** 2 / np.where(c > 0, c, np.nan), soo - so ** 2 / np.where(c > 0, c, np.nan)
        flat = lambda v, sq: v <= 1e-12 * sq  # noqa: E731  (rounding of a constant response)
        den = np.sqrt(np.where(flat(var_e, see) | flat(var_o, soo), np.nan, var_e * var_o))
        r = cov / den
        var_total = _from_sums(tc, ts1, ts2)
        var_trials = np.nansum(_from_sums(trial[:, 0], trial[:, 1], trial[:, 2]), axis=1)
        power = (var_total - var_trials) / np.where(n_min >= 2, n_min * (n_min - 1), np.nan)
        var_mean = var_total / n_min ** 2
        ccmax = np.sqrt(np.clip(power, 0, None) / np.where(var_mean > 0, var_mean, np.nan))
    return np.stack([r, ccmax])


def reliability(ds: xr.Dataset, smooth_ms: float | None = 21.0, window="hann") -> xr.Dataset:
    """Trial-to-trial reliability of the PSTH: split-half correlation and noise ceiling.

    A pair's trials are those with ``trial < n_trials``; its bins are those
    where every one of them holds data (so trials of different recorded
    spans compare on the same bins). Each trial's rate is smoothed with
    :func:`smooth`. Per (stim, neuron), with ``N`` trials:

    - ``split_half``: Pearson correlation over time of the mean of the
      even-ranked trials (0th, 2nd, ...) with the mean of the odd-ranked ones;
      deterministic, and it balances slow drifts across the two halves.
    - ``spearman_brown``: ``2 r / (1 + r)``, the reliability of the mean of
      all ``N`` trials (halves of ``ceil(N/2)`` and ``floor(N/2)`` trials).
    - ``signal_power`` (Sahani & Linden 2003):
      ``SP = (Var(sum_n r_n) - sum_n Var(r_n)) / (N (N - 1))``, variances over
      time bins.
    - ``ccmax`` (Schoppe et al. 2016, and their reference ``calc_CCnorm.m``):
      ``sqrt(SP / Var(mean_n r_n))``, the correlation between the N-trial
      PSTH and the expected response; 0 where ``SP <= 0`` as in that code.
      All variances here divide by the number of bins (the reference code
      divides SP's by one less: a factor ``T/(T-1)`` under the root).

    Per neuron, the same over the concatenation of its stimuli (Pearson and
    variances over ``stim`` and ``time`` jointly): the split halves use all
    trials of every stimulus; the ceiling pairs trial k of every stimulus
    (by position along ``trial``) and uses the first ``N_min`` of each, the
    least ``N >= 2`` among its stimuli. All are NaN with fewer than 2 trials
    and where the response does not vary (e.g. no spike at all).

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`; select ``time`` first to restrict the
        bins (e.g. ``ds.sel(time=slice(0, None))``).
    smooth_ms, window
        See :func:`smooth`; None or 0 uses the raw bins.

    Returns
    -------
    xarray.Dataset
        ``split_half``, ``spearman_brown``, ``signal_power`` (Hz**2),
        ``ccmax`` (stim, neuron) and ``neuron_split_half``,
        ``neuron_spearman_brown``, ``neuron_ccmax`` (neuron); lazy when
        ``spike_count`` is. It streams: each ``spike_count`` chunk is reduced
        to per-pair figures and per-stimulus sums on its own (one kernel),
        and the per-neuron figures add those sums up, so no more than a few
        chunks are held at once.

    Examples
    --------
    >>> import aa4xr
    >>> rel = reliability(aa4xr.open_aa4())              # or ds.aa4.reliability()
    >>> typical = rel.ccmax.median("stim")               # NaN (unheard) pairs skipped
    """
    _require(ds, "reliability", "spike_count", "n_trials")
    dt = _dt(ds)
    taps = _taps(smooth_ms, window, dt) if smooth_ms else None
    counts = ds["spike_count"].transpose("stim", "neuron", "trial", "time")
    data = counts.data if isinstance(counts.data, da.Array) else da.from_array(counts.values, chunks=(16, -1, -1, -1))
    data = data.rechunk({2: -1, 3: -1})
    n_trials = np.nan_to_num(np.asarray(ds["n_trials"].transpose("stim", "neuron"), float)).astype("i8")
    used = np.minimum(n_trials, counts.sizes["trial"]).astype(float)
    n_min = np.nanmin(np.where(used >= 2, used, np.nan), axis=0, initial=np.inf)
    n_min[~np.isfinite(n_min)] = np.nan
    n_trial = counts.sizes["trial"]
    stats = da.blockwise(_reliability_block, "snq", data, "sntk",
                         da.from_array(n_trials, chunks=data.chunks[:2]), "sn",
                         da.from_array(n_min, chunks=data.chunks[1]), "n",
                         new_axes={"q": 12 + 3 * n_trial}, concatenate=True, dtype="f8", dt=dt, taps=taps,
                         meta=np.empty((0, 0, 0)))
    neuron = da.blockwise(_neuron_figures, "jn", stats[..., 3:].sum(axis=0), "nq",
                          da.from_array(n_min, chunks=data.chunks[1]), "n", new_axes={"j": 2}, concatenate=True,
                          dtype="f8", n_trial=n_trial, meta=np.empty((0, 0)))
    pairs = counts.isel(trial=0, time=0, drop=True).rename(None)
    neurons = counts.isel(stim=0, trial=0, time=0, drop=True).rename(None)
    pair_r, power, ccmax = (pairs.copy(data=stats[..., k]).drop_attrs() for k in range(3))
    neuron_r, neuron_ccmax = (neurons.copy(data=neuron[k]).drop_attrs() for k in range(2))
    one = {"units": "1"}
    out = xr.Dataset(
        {"split_half": pair_r.assign_attrs(long_name="split-half PSTH correlation (even vs odd trials)", **one),
         "spearman_brown": _spearman_brown(pair_r).assign_attrs(
             long_name="Spearman-Brown corrected split-half correlation", **one),
         "signal_power": power.assign_attrs(long_name="signal power of the firing rate (Sahani & Linden 2003)",
                                            units="Hz2"),
         "ccmax": ccmax.assign_attrs(long_name="noise ceiling CCmax (Schoppe et al. 2016)", **one),
         "neuron_split_half": neuron_r.assign_attrs(
             long_name="split-half PSTH correlation over all stimuli (even vs odd trials)", **one),
         "neuron_spearman_brown": _spearman_brown(neuron_r).assign_attrs(
             long_name="Spearman-Brown corrected split-half correlation over all stimuli", **one),
         "neuron_ccmax": neuron_ccmax.assign_attrs(long_name="noise ceiling CCmax over all stimuli", **one)},
        attrs={"smooth_ms": float(smooth_ms or 0), "window": str(window)})
    return out if isinstance(counts.data, da.Array) else out.compute(scheduler="sync")


def _spearman_brown(r: xr.DataArray) -> xr.DataArray:
    return 2 * r / (1 + r.where(r > -1))
