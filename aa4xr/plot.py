"""Figures of an AA4 Dataset: the single-cell view and the population PSTH raster.

Every function draws with matplotlib on axes you pass or on a new
:class:`matplotlib.figure.Figure` (created without pyplot, so it works under
any backend, Agg included, and leaves no global state), returns the Figure or
Axes, and never calls ``show``. Rasters use the exact spike times of the store
(:func:`aa4xr.open_spike_times`); PSTHs are :func:`aa4xr.analysis.psth` of the
binned ``spike_count``.

- :func:`coverage`: which (stimulus, neuron) pairs hold data, never-heard
  pairs in grey.
- :func:`spectrogram`: a stimulus's mel spectrogram, frequency in kHz, with
  a colorbar.
- :func:`raster`: one (stimulus, neuron) pair's trials as spike ticks.
- :func:`single_cell`: for a few stimuli, one column each: spectrogram,
  raster, PSTH.
- :func:`population_raster`: one stimulus, one image row per neuron (its
  PSTH), rows of the neurons that never heard it in grey; optionally grouped
  by (animal, site) and sorted by (electrode, subsort_id) with the e16/e17
  (hemisphere) boundaries marked.
- :func:`inspect_figures`: the three inspection figures as PNG files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .analysis import mask, psth

__all__ = ["spectrogram", "raster", "single_cell", "population_raster", "coverage", "inspect_figures",
           "default_stims", "electrode_order", "stim_label", "FIGURE_NAMES"]

#: Grey of the rows of neurons that never heard the stimulus.
UNHEARD_COLOR = "0.72"
#: Shade of the stimulus's span in rasters and PSTHs.
STIM_SPAN_COLOR = "0.93"
#: Last electrode of the first 16-channel array (one array per hemisphere).
HEMISPHERE_SPLIT = 16
#: File names written by :func:`inspect_figures`, in order.
FIGURE_NAMES = ("single_cell.png", "population_raster.png", "population_raster_by_electrode.png")
_SORTS = (None, "electrode")


# ---------------------------------------------------------------- helpers

def _check_dataset(ds: xr.Dataset, func: str, *names: str) -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{func}() takes the xarray.Dataset of aa4xr.open_aa4(), got {type(ds).__name__}")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise ValueError(f"{func}() needs {missing} of aa4xr.open_aa4(); the Dataset holds "
                         f"{sorted(map(str, ds.variables))}")


def _check_label(ds: xr.Dataset, dim: str, label: str) -> str:
    label = str(label)
    if label not in set(np.asarray(ds[dim].values, dtype=str)):
        raise KeyError(f"{dim} {label!r} is not in the Dataset ({ds.sizes[dim]} {dim} values, "
                       f"e.g. {str(ds[dim].values[0]) if ds.sizes[dim] else 'none'!r})")
    return label


def stim_label(ds: xr.Dataset, stim: str) -> str:
    """A short name of a stimulus: type, call type and the first 8 hex digits of its md5.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> stim_label(ds, ds.stim.values[0])
    'call Ag 41c23c3c'
    """
    s = ds.sel(stim=stim)
    parts = [str(s["stim_type"].values) if "stim_type" in s.coords else "",
             str(s["call_type"].values) if "call_type" in s.coords else "", str(stim)[:8]]
    return " ".join(p for p in parts if p)


#: How the spectrogram's colorbar names each ``compression`` of :func:`aa4xr.open_aa4`.
COMPRESSION_LABELS = {"cubic": "(mel PSD)$^{1/3}$", "log1p": "log(1 + mel PSD)", "none": "mel PSD"}


def spectrogram_label(ds: xr.Dataset) -> str:
    """The spectrogram colorbar's label: the compressed quantity, and the unit of the PSD.

    Examples
    --------
    >>> import aa4xr
    >>> spectrogram_label(aa4xr.open_aa4())
    '(mel PSD)$^{1/3}$, PSD in full scale$^2$/Hz'
    """
    attrs = ds["spectrogram"].attrs
    name = COMPRESSION_LABELS.get(str(attrs.get("compression")), str(attrs.get("long_name", "spectrogram")))
    psd_units = "full scale$^2$/Hz" if "full scale^2/Hz" in str(attrs.get("long_name", "")) else ""
    return name + (f", PSD in {psd_units}" if psd_units else "")


def _window(ds: xr.Dataset, stim: str) -> tuple[np.ndarray, float, float]:
    """Bins of ``stim``'s window ``[-pre, duration + post)``, and the edges of those bins (s).

    A bin is inside when it starts before ``duration + post``; the last one
    may end a little after, and is shown whole.
    """
    time = np.asarray(ds["time"], float)
    end = _duration(ds, stim) + float(ds.attrs.get("post", 0.0))
    inside = time < end
    if not inside.any():
        return inside, end, end
    return inside, float(time[0]), float(time[inside][-1]) + _dt(ds)


def _duration(ds: xr.Dataset, stim: str) -> float:
    return float(ds["duration"].values[np.flatnonzero(np.asarray(ds["stim"].values, dtype=str) == stim)[0]])


def _dt(ds: xr.Dataset) -> float:
    time = np.asarray(ds["time"], float)
    return float(ds.attrs.get("dt", time[1] - time[0] if time.size > 1 else 1.0))


def _axes_grid(axes, shape: tuple[int, int], figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    if axes is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, np.asarray(fig.subplots(*shape, squeeze=False, sharex="col"))
    axes = np.asarray(axes, dtype=object).reshape(shape)
    return axes.flat[0].figure, axes


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def _mark_stimulus(ax: Axes, duration: float) -> None:
    """Shade the stimulus's span [0, duration] behind the data."""
    ax.axvspan(0.0, duration, color=STIM_SPAN_COLOR, zorder=0, lw=0, gid="stimulus")


# ---------------------------------------------------------------- panels

def spectrogram(ds: xr.Dataset, stim: str, *, ax: Axes | None = None, cmap: str = "magma",
                vmax: float | None = None, colorbar: bool = True) -> Axes:
    """Draw a stimulus's mel spectrogram over its window, frequency in kHz.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4` (with its ``spectrogram`` variable).
    stim : str
        The stimulus (md5).
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new figure).
    cmap : str
        Colormap of the (compressed) power.
    vmax : float, optional
        Top of the colour scale (default: the 99.5th percentile).
    colorbar : bool
        Add a colorbar beside the axes, labelled with the spectrogram's
        ``long_name`` (its compression and units).

    Returns
    -------
    matplotlib.axes.Axes
        Holding one :class:`~matplotlib.collections.QuadMesh` of shape
        ``(frequency, bins of the window)``; a note when the sound is missing.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> ax = spectrogram(ds, ds.stim.values[0])
    >>> ax.get_ylabel()
    'frequency (kHz)'
    """
    _check_dataset(ds, "spectrogram", "spectrogram", "duration")
    stim = _check_label(ds, "stim", stim)
    ax = _new_axes(ax, (5, 2.5))
    inside, start, end = _window(ds, stim)
    time = np.asarray(ds["time"], float)[inside]
    values = np.asarray(ds["spectrogram"].sel(stim=stim).transpose("frequency", "time"), float)[:, inside]
    khz = np.asarray(ds["frequency"], float) / 1e3
    finite = np.isfinite(values)
    if vmax is None:
        vmax = float(np.percentile(values[finite], 99.5)) if finite.any() else 1.0
    dt = _dt(ds)
    mesh = ax.pcolormesh(time + dt / 2, khz, np.ma.masked_invalid(values), shading="nearest",
                         cmap=cmap, vmin=0.0, vmax=vmax or 1.0, rasterized=True)
    mesh.set_gid("spectrogram")
    if not finite.any():
        ax.text(0.5, 0.5, "no sound file", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.05)
        bar.set_label(spectrogram_label(ds), fontsize="x-small")
        bar.ax.tick_params(labelsize="x-small")
    ax.set_xlim(start, end)
    ax.set_ylim(0, khz.max() * 1.02 if khz.size else 1)
    ax.set_ylabel("frequency (kHz)")
    ax.set_xlabel("time from stimulus onset (s)")
    return ax


def raster(ds: xr.Dataset, stim: str, neuron: str, *, spikes: xr.Dataset | None = None,
           ax: Axes | None = None, color: str = "k") -> Axes:
    """Draw the exact spike times of every trial of one (stimulus, neuron) pair.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4` (for the window and the labels).
    stim, neuron : str
        The stimulus (md5) and the neuron (``"<animal>/<stem>"``).
    spikes : xarray.Dataset, optional
        :func:`aa4xr.open_spike_times` of the Dataset's root (default: opened
        from ``ds.attrs["root"]``, which reads the existing store).
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new figure).
    color : str
        Colour of the ticks.

    Returns
    -------
    matplotlib.axes.Axes
        One :class:`~matplotlib.collections.EventCollection` per trial, trial
        ``k`` (presentation order) at ``y = k``, top to bottom; its
        ``get_positions()`` are that trial's spike times (s from onset). The
        x range is the stimulus's window; spikes outside it are kept but
        clipped from view.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> neuron = ds.neuron.values[0]
    >>> stim = ds.stim.values[(ds.n_trials.sel(neuron=neuron) > 0).values][0]
    >>> ax = raster(ds, stim, neuron)
    >>> len(ax.collections) == int(ds.n_trials.sel(stim=stim, neuron=neuron))
    True
    """
    _check_dataset(ds, "raster", "duration")
    stim, neuron = _check_label(ds, "stim", stim), _check_label(ds, "neuron", neuron)
    spikes = _spikes(ds, spikes)
    from .store import trial_spike_times

    trains = trial_spike_times(spikes, stim, neuron)
    ax = _new_axes(ax, (5, 2.5))
    _mark_stimulus(ax, _duration(ds, stim))
    if trains:
        ax.eventplot([np.asarray(t, float) for t in trains], lineoffsets=np.arange(len(trains)),
                     linelengths=0.8, linewidths=0.8, colors=color)
    else:
        ax.text(0.5, 0.5, "not heard", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_yticks([])
    _, start, end = _window(ds, stim)
    ax.set_xlim(start, end)
    ax.set_ylim(max(len(trains), 1) - 0.5, -0.5)
    if trains:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("trial")
    ax.set_xlabel("time from stimulus onset (s)")
    return ax


def _spikes(ds: xr.Dataset, spikes: xr.Dataset | None) -> xr.Dataset:
    if spikes is not None:
        return spikes
    root = ds.attrs.get("root")
    if not root or not Path(root).is_dir():
        raise ValueError(f"the Dataset's root {root!r} (ds.attrs['root']) is not a folder here: pass "
                         "spikes=aa4xr.open_spike_times(root) with the AA4 root the Dataset came from")
    from .store import open_spike_times

    animals = [a for a in str(ds.attrs.get("animals", "")).split(",") if a] or None
    with warnings.catch_warnings():  # files the stores skipped were reported when ds was opened
        warnings.filterwarnings("ignore", "skipped unreadable unit file")
        return open_spike_times(root, animals=animals, errors="warn")


# ---------------------------------------------------------------- figures

def default_stims(ds: xr.Dataset, neuron: str, n: int = 3) -> list[str]:
    """Up to ``n`` stimuli the neuron heard, one per stimulus type first (song, call, mlnoise).

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> stims = default_stims(ds, ds.neuron.values[0])
    """
    neuron = _check_label(ds, "neuron", neuron)
    heard = np.asarray(ds["n_trials"].sel(neuron=neuron) > 0)
    stims = np.asarray(ds["stim"].values, dtype=str)[heard]
    types = np.asarray(ds["stim_type"].values, dtype=str)[heard] if "stim_type" in ds.coords \
        else np.full(stims.size, "")
    first = [stims[types == t][0] for t in ("song", "call", "mlnoise") if (types == t).any()]
    rest = [s for s in stims if s not in first]
    return (first + rest)[:n]


def single_cell(ds: xr.Dataset, neuron: str, stims: Sequence[str] | str | None = None, *,
                spikes: xr.Dataset | None = None, max_stims: int = 3, smooth_ms: float | None = 21.0,
                window: str = "hann", axes=None, cmap: str = "magma") -> Figure:
    """The single-cell view: spectrogram, raster and PSTH for a few stimuli.

    One column per stimulus: its mel spectrogram (frequency in kHz), the
    raster of the neuron's trials from the exact spike times, and its PSTH
    (:func:`aa4xr.analysis.psth`, spikes/s, smoothed with a ``smooth_ms``
    ``window``; PSTHs share their y range). The stimulus's span is shaded.
    Each spectrogram has its own colour scale (a broadband noise spreads its
    power over many bands and would look faint next to a tone).

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`.
    neuron : str
        ``"<animal>/<stem>"``.
    stims : str or list of str, optional
        Stimuli (md5) to show (default: :func:`default_stims`, up to
        ``max_stims`` heard by the neuron, one of each type first).
    spikes : xarray.Dataset, optional
        :func:`aa4xr.open_spike_times` of the Dataset's root (default: opened
        from ``ds.attrs["root"]``).
    max_stims : int
        Columns when ``stims`` is None.
    smooth_ms, window
        PSTH smoothing, see :func:`aa4xr.analysis.smooth`.
    axes : array of matplotlib.axes.Axes, optional
        ``(3, len(stims))`` axes to draw on (default: a new figure).
    cmap : str
        Colormap of the spectrograms.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> fig = single_cell(ds, ds.neuron.values[0], max_stims=4)
    >>> len(fig.axes)  # 4 columns of spectrogram (and its colorbar), raster, PSTH
    16
    """
    _check_dataset(ds, "single_cell", "spike_count", "n_trials", "duration", "spectrogram")
    neuron = _check_label(ds, "neuron", neuron)
    if stims is None:
        stims = default_stims(ds, neuron, max_stims)
        if not stims:
            raise ValueError(f"neuron {neuron!r} heard no stimulus of this Dataset: pass stims=")
    stims = [_check_label(ds, "stim", s) for s in ([stims] if isinstance(stims, str) else stims)]
    spikes = _spikes(ds, spikes)
    n = len(stims)
    fig, grid = _axes_grid(axes, (3, n), (1.2 + 3.4 * n, 7.0))
    rate = psth(ds.sel(stim=stims, neuron=[neuron]), smooth_ms, window).squeeze("neuron").compute()
    dt = _dt(ds)
    peak = float(np.nanmax(rate.values)) if np.isfinite(rate.values).any() else 1.0
    for j, stim in enumerate(stims):
        top, mid, bottom = grid[:, j]
        duration = _duration(ds, stim)
        spectrogram(ds, stim, ax=top, cmap=cmap)
        top.set_title(f"{stim_label(ds, stim)}\n{duration:.2f} s, "
                      f"{int(ds['n_trials'].sel(stim=stim, neuron=neuron))} trials", fontsize="medium")
        raster(ds, stim, neuron, spikes=spikes, ax=mid)
        inside, start, end = _window(ds, stim)
        _mark_stimulus(bottom, duration)
        r = rate.sel(stim=stim).values[inside]
        bottom.plot(np.asarray(ds["time"])[inside] + dt / 2, r, color="C0", lw=1.2, gid="psth")
        bottom.set_xlim(start, end)
        bottom.set_ylim(0, peak * 1.08 or 1.0)
        bottom.set_ylabel("rate (spikes/s)")
        bottom.set_xlabel("time from stimulus onset (s)")
        for ax in (top, mid):
            ax.set_xlabel("")
            ax.tick_params(labelbottom=False)
        if j:
            for ax in (top, mid, bottom):
                ax.set_ylabel("")
    smoothing = f"{window} {smooth_ms:g} ms" if smooth_ms else "no smoothing"
    info = [str(ds[c].sel(neuron=neuron).values) for c in ("sort_type",) if c in ds.coords]
    if "electrode" in ds.coords:
        info.append(f"electrode {int(ds['electrode'].sel(neuron=neuron))}")
    fig.suptitle(f"{neuron}  ({', '.join(info)}; PSTH {smoothing})", fontsize="large")
    return fig


def electrode_order(ds: xr.Dataset) -> np.ndarray:
    """Neuron positions grouped by (animal, site), then sorted by (electrode, subsort_id).

    Animals keep their Dataset order, sites their numeric order (Site2 before
    Site10); a NaN ``subsort_id`` comes last; ties keep Dataset order.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> order = electrode_order(ds)
    >>> [str(n) for n in ds.neuron.values[order][:3]]  # doctest: +NORMALIZE_WHITESPACE
    ['BlaBro09xxF/Site1_L1400R1400_e3_s0_ss1', 'BlaBro09xxF/Site1_L1400R1400_e23_s2',
     'BlaBro09xxF/Site1_L1400R1400_e28_s1']
    """
    n = ds.sizes["neuron"]
    animal = pd.factorize(np.asarray(ds["animal"].values, dtype=str))[0]
    site = pd.to_numeric(pd.Series(np.asarray(ds["site"].values, dtype=str)).str.extract(r"(\d+)")[0],
                         errors="coerce").to_numpy(float)
    subsort = np.asarray(ds["subsort_id"], float) if "subsort_id" in ds.coords else np.full(n, np.nan)
    return np.lexsort((np.arange(n), subsort, np.asarray(ds["electrode"], float), site, animal))


def _runs(labels: np.ndarray) -> list[tuple[int, int, str]]:
    """``(start, stop, label)`` of each run of equal labels."""
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = np.r_[0, cuts, labels.size]
    return [(int(a), int(b), str(labels[a])) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _mark_groups(ax: Axes, ds: xr.Dataset, order: np.ndarray) -> None:
    """Separators and labels of the (animal, site) groups; each group's e16/e17 boundary."""
    animal = np.asarray(ds["animal"].values, dtype=str)[order]
    site = np.asarray(ds["site"].values, dtype=str)[order]
    electrode = np.asarray(ds["electrode"])[order]
    groups = _runs(np.char.add(np.char.add(animal, "\n"), site))
    for start, stop, _ in groups[1:]:
        ax.axhline(start - 0.5, color="k", lw=1.5, gid="group-boundary")
    for start, stop, _ in groups:
        split = start + int((electrode[start:stop] <= HEMISPHERE_SPLIT).sum())
        if start < split < stop:
            ax.axhline(split - 0.5, color="crimson", lw=1.2, ls="--", gid="hemisphere-boundary")
    labels = ax.secondary_yaxis("right")
    labels.set_yticks([(a + b - 1) / 2 for a, b, _ in groups], [g for _, _, g in groups], fontsize="x-small")
    labels.tick_params(length=0)


def population_raster(ds: xr.Dataset, stim: str, *, sort: str | None = None,
                      smooth_ms: float | None = 21.0, window: str = "hann", ax: Axes | None = None,
                      cmap: str = "viridis", vmax: float | None = None, max_labels: int = 60) -> Axes:
    """The population PSTH "raster" of one stimulus: one image row per neuron.

    Each row is the neuron's PSTH (:func:`aa4xr.analysis.psth`, spikes/s)
    over the stimulus's window; rows of neurons that never heard the stimulus
    (``n_trials == 0``) are masked and drawn in grey (:data:`UNHEARD_COLOR`,
    counted in the legend). Bins of a heard neuron where no trial holds data
    (outside every trial's recorded span) are masked too. The title names
    the stimulus and the smoothing.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    stim : str
        The stimulus (md5).
    sort : {None, "electrode"}
        None keeps the Dataset's neuron order; "electrode" groups rows by
        (animal, site), each group sorted by (electrode, subsort_id) (see
        :func:`electrode_order`): black lines separate the groups, labelled
        on the right, and a dashed line marks each group's boundary between
        electrodes 1-16 and 17-32 (one 16-channel array per hemisphere).
    smooth_ms, window
        PSTH smoothing, see :func:`aa4xr.analysis.smooth`.
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new figure); a colorbar is added beside it.
    cmap : str
        Colormap of the rates (its "bad" colour is set to grey).
    vmax : float, optional
        Top of the colour scale in spikes/s (default: the 99th percentile).
    max_labels : int
        Label rows with neuron names when there are at most this many.

    Returns
    -------
    matplotlib.axes.Axes
        Its image ``ax.images[0]`` holds the masked ``(neuron, time)`` rates;
        the image also carries ``neurons`` (row labels, top to bottom) and
        ``unheard`` (bool per row) attributes. With ``sort="electrode"`` the
        group separators are the lines of gid ``"group-boundary"`` and the
        hemisphere boundaries those of gid ``"hemisphere-boundary"``.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> ax = population_raster(ds, ds.stim.values[0], sort="electrode")
    >>> int(ax.images[0].unheard.sum()) == int((ds.n_trials.isel(stim=0) == 0).sum())
    True
    """
    _check_dataset(ds, "population_raster", "spike_count", "n_trials", "duration")
    if sort not in _SORTS:
        raise ValueError(f"sort must be one of {_SORTS}, got {sort!r}")
    stim = _check_label(ds, "stim", stim)
    one = ds.sel(stim=[stim])
    order = electrode_order(ds) if sort == "electrode" else np.arange(ds.sizes["neuron"])
    neurons = np.asarray(ds["neuron"].values, dtype=str)[order]
    unheard = ~np.asarray(mask(one).isel(stim=0))[order]
    inside, start, end = _window(ds, stim)
    rate = np.asarray(psth(one, smooth_ms, window).isel(stim=0).transpose("neuron", "time"),
                      float)[order][:, inside]
    rate[unheard] = np.nan
    values = np.ma.masked_invalid(rate)

    ax = _new_axes(ax, (9, min(1.6 + 0.17 * max(len(order), 10), 11.0)))
    colors = colormaps[cmap].with_extremes(bad=UNHEARD_COLOR)
    finite = values.compressed()
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = vmax or 1.0
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=colors, vmin=0.0, vmax=vmax,
                      extent=(start, end, len(order) - 0.5, -0.5))
    image.neurons, image.unheard = neurons, unheard
    duration = _duration(ds, stim)
    for t in (0.0, duration):
        if start < t < end:
            ax.axvline(t, color="w", lw=0.8, ls="--", gid="stimulus-edge")
    colorbar = ax.figure.colorbar(image, ax=ax, extend="max" if finite.size and finite.max() > vmax else "neither",
                                  pad=0.01, fraction=0.04)
    colorbar.set_label("rate (spikes/s)")
    if len(order) <= max_labels:
        ax.set_yticks(np.arange(len(order)), neurons, fontsize="x-small")
    ax.set_ylabel("neuron" + (" (by animal, site, electrode, subsort_id)" if sort else ""))
    ax.set_xlabel("time from stimulus onset (s)")
    if sort == "electrode" and len(order):
        _mark_groups(ax, ds, order)
    handles = [Patch(color=UNHEARD_COLOR, label=f"not heard ({int(unheard.sum())} of {len(order)})")]
    if sort == "electrode":
        handles.append(Line2D([], [], color="crimson", lw=1.2, ls="--",
                              label=f"e{HEMISPHERE_SPLIT} | e{HEMISPHERE_SPLIT + 1} (hemisphere arrays)"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small",
              borderaxespad=0.2)
    ax.set_title(f"{stim_label(ds, stim)} ({duration:.2f} s)\nPSTH per neuron, {_smoothing(smooth_ms, window)}",
                 loc="left", fontsize="medium")
    return ax


def _smoothing(smooth_ms: float | None, window: str) -> str:
    """How a PSTH was smoothed, in words."""
    return f"{window} {smooth_ms:g} ms smoothing" if smooth_ms else "no smoothing"


def coverage(ds: xr.Dataset, *, ax: Axes | None = None, cmap: str = "viridis", max_labels: int = 60) -> Axes:
    """Which (stimulus, neuron) pairs hold data: ``n_trials`` as an image, never-heard pairs in grey.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it.
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new figure); a colorbar is added beside it.
    cmap : str
        Colormap of the trial counts (its "bad" colour is set to grey).
    max_labels : int
        Label rows (stimuli, see :func:`stim_label`) and columns (neurons)
        when there are at most this many of them.

    Returns
    -------
    matplotlib.axes.Axes
        Its image ``ax.images[0]`` holds ``n_trials`` ``(stim, neuron)``,
        masked where it is 0 (never heard); the image also carries ``unheard``
        (bool, ``(stim, neuron)``).

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> ax = coverage(ds)
    >>> int(ax.images[0].unheard.sum()) == int((ds.n_trials == 0).sum())
    True
    """
    _check_dataset(ds, "coverage", "n_trials")
    n_trials = np.asarray(ds["n_trials"].transpose("stim", "neuron"), float)
    unheard = ~(n_trials > 0)
    n_stim, n_neuron = n_trials.shape
    ax = _new_axes(ax, (min(2.5 + 0.22 * n_neuron, 16.0), min(1.8 + 0.2 * n_stim, 14.0)))
    image = ax.imshow(np.ma.masked_array(n_trials, unheard), aspect="auto", interpolation="nearest",
                      cmap=colormaps[cmap].with_extremes(bad=UNHEARD_COLOR), vmin=0)
    image.unheard = unheard
    ax.figure.colorbar(image, ax=ax, pad=0.01, fraction=0.04).set_label("trials")
    if n_stim <= max_labels:
        ax.set_yticks(np.arange(n_stim), [stim_label(ds, s) for s in ds["stim"].values], fontsize="x-small")
    if n_neuron <= max_labels:
        ax.set_xticks(np.arange(n_neuron), [str(n) for n in ds["neuron"].values], fontsize="x-small", rotation=90)
    ax.set_xlabel("neuron")
    ax.set_ylabel("stimulus")
    ax.legend(handles=[Patch(color=UNHEARD_COLOR, label=f"never heard ({int(unheard.sum())} of {unheard.size} pairs)")],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small", borderaxespad=0.2)
    ax.set_title("trials per pair", loc="left", fontsize="medium")
    return ax


# ---------------------------------------------------------------- files

def inspect_figures(root: str | os.PathLike | None = None, out_dir: str | os.PathLike = ".", *,
                    dt: float = 0.005, pre: float = 0.2, post: float = 0.2, neuron: str | None = None,
                    stim: str | None = None, animals: Sequence[str] | str | None = None, errors: str = "raise",
                    dpi: int = 120) -> list[Path]:
    """Write the three inspection figures of a root as PNG files.

    The single-cell view of ``neuron`` (default: the neuron that heard the
    most stimuli), and the population raster of ``stim`` (default: the first
    stimulus of that view, a song when it heard one) in Dataset order and
    sorted by electrode.

    Parameters
    ----------
    root : path, optional
        An AA4 root (default: the built-in sample).
    out_dir : path
        Folder of the PNG files (created when missing).
    dt, pre, post : float
        Bin width, and seconds shown before onset and after offset (s).
    neuron, stim : str, optional
        What to show.
    animals : str or list of str, optional
        Animals to open (default: all found).
    errors : {"raise", "warn"}
        An unreadable unit file raises, or is skipped with a warning (see
        :func:`aa4xr.open_aa4`).
    dpi : int
        Resolution of the files.

    Returns
    -------
    list of pathlib.Path
        The files, named as :data:`FIGURE_NAMES`.

    Examples
    --------
    >>> import tempfile
    >>> paths = inspect_figures(out_dir=tempfile.mkdtemp(), dpi=30)
    >>> [p.name for p in paths]
    ['single_cell.png', 'population_raster.png', 'population_raster_by_electrode.png']
    """
    from .dataset import open_aa4

    ds = open_aa4(root, dt=dt, pre=pre, post=post, animals=animals, errors=errors)
    if not ds.sizes["neuron"] or not ds.sizes["stim"]:
        raise ValueError(f"no neuron or no stimulus to show in {ds.attrs['root']}")
    if neuron is None:
        neuron = str(ds["neuron"].values[int(mask(ds).sum("stim").argmax("neuron"))])
    stims = default_stims(ds, neuron)
    if stim is None:
        stim = stims[0] if stims else str(ds["stim"].values[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spikes = _spikes(ds, None)
    figures = [single_cell(ds, neuron, stims or [stim], spikes=spikes),
               population_raster(ds, stim).figure,
               population_raster(ds, stim, sort="electrode").figure]
    paths = []
    for name, fig in zip(FIGURE_NAMES, figures):
        path = out / name
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
