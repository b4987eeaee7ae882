"""``open_aa4``: the AA4 corpus as one lazy, labelled xarray Dataset."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize

from . import __version__
from ._validate import check_choices, check_count, check_grid, check_names, check_size_mb
from .binning import count_block, time_grid
from .layout import resolve_root, wav_file_name
from .read import TRIAL_ATTRS
from .stimuli import locate_sounds, stimulus_spectrograms, stimulus_waveforms
from .store import cache_dir, check_errors, load_tables, read_spikes, stim_order, stimulus_table, store_paths

STIM_TYPES = ("song", "call", "mlnoise")
SORT_TYPES = ("single", "multi", "noise", "tdt")
STIM_COORDS = ("stim_type", "call_type", "stim_class", "duration")
NEURON_COORDS = ("animal", "sex", "cell_id", "site", "sort_type", "electrode", "sort_id",
                 "ldepth", "rdepth", "subsort_id")
ATTRS = {
    "spike_count": {"long_name": "spike count in [time, time + dt)", "units": "1"},
    "n_trials": {"long_name": "trials of this stimulus presented to this neuron", "units": "1"},
    "bg_rate": {"long_name": "background firing rate (from the files)", "units": "Hz"},
    "peri_rate": {"long_name": "stimulus-evoked firing rate (from the files)", "units": "Hz"},
    "pre_time": {"long_name": "recorded span before stimulus onset", "units": "s"},
    "post_time": {"long_name": "recorded span after stimulus offset", "units": "s"},
    "zscore": {"long_name": "evoked vs background z-score (from the files)", "units": "1"},
    "tstat": {"long_name": "evoked vs background t statistic (from the files)", "units": "1"},
    "pvalue": {"long_name": "evoked vs background p-value (from the files)", "units": "1"},
    "time": {"long_name": "bin start from stimulus onset", "units": "s"},
    "duration": {"long_name": "stimulus duration", "units": "s"},
    "trial": {"long_name": "trial in presentation order"},
    "protocol": {"long_name": "protocol group of the trial in its unit file (\"\" where no trial)"},
    "trial_name": {"long_name": "the trial's own group name in its unit file (\"\" where no trial)"},
    "stim": {"long_name": "md5 of the stimulus sound"},
    "neuron": {"long_name": "<animal>/<unit file stem>"},
    "ldepth": {"long_name": "left electrode array depth", "units": "um"},
    "rdepth": {"long_name": "right electrode array depth", "units": "um"},
}


@dataclass
class Rows:
    """Kept trials of every animal, with their place in the Dataset."""

    path: np.ndarray        # store index (animal) of each row
    stim: np.ndarray        # position along ``stim``
    neuron: np.ndarray      # position along ``neuron``
    trial: np.ndarray       # position along ``trial``
    start: np.ndarray       # offset into its store's spike_time
    size: np.ndarray
    values: dict            # TRIAL_ATTRS and zscore/tstat/pvalue (per row, from its group)
    labels: dict            # protocol and trial_name (str, per row)


def _units_table(animal: str, tables: xr.Dataset) -> pd.DataFrame:
    stem = tables["unit_stem"].values.astype(str)
    return pd.DataFrame({
        "neuron": [f"{animal}/{s}" for s in stem],
        "animal": animal,
        "sex": animal[-1] if animal[-1] in "FM" else "",
        "cell_id": stem,
        "site": tables["unit_site"].values.astype(str),
        "sort_type": tables["unit_sort_type"].values.astype(str),
        "electrode": tables["unit_electrode"].values.astype("i8"),
        "sort_id": tables["unit_sort_id"].values.astype("i8"),
        **{k: tables[f"unit_{k}"].values.astype("f8") for k in ("ldepth", "rdepth", "subsort_id")},
    })


def _groups_table(tables: xr.Dataset) -> pd.DataFrame:
    get = lambda k, default: tables[f"group_{k}"].values if f"group_{k}" in tables else default  # noqa: E731
    n = tables.sizes.get("group", 0)
    stim_type = get("stim_type", np.array([], str)).astype(str)
    callid = np.asarray(get("callid", np.full(n, "")), dtype=str)
    return pd.DataFrame({
        "md5": get("stim_md5", np.array([], str)).astype(str),
        "stim_type": stim_type,
        "call_type": np.where(stim_type == "call", callid, ""),
        "stim_class": np.asarray(get("stim_class", np.full(n, "")), dtype=str),
        "duration": get("stim_duration", np.array([], float)).astype("f8"),
        **{k: np.asarray(get(k, np.full(n, np.nan)), dtype="f8") for k in ("zscore", "tstat", "pvalue")},
    })


#: The store variables ``open_aa4`` reads (the provenance strings stay on disk).
COLLECTED = (
    *(f"unit_{k}" for k in ("stem", "site", "sort_type", "electrode", "sort_id", "ldepth", "rdepth", "subsort_id")),
    *(f"group_{k}" for k in ("stim_md5", "stim_type", "callid", "stim_class", "stim_duration", "zscore", "tstat",
                             "pvalue", "number", "unit", "protocol", "tdt_wavfile")),
    *(f"row_{k}" for k in ("size", "unit", "group", "trial", "trial_name", *TRIAL_ATTRS)),
)


def _chunks(sizes: np.ndarray, limit: int) -> tuple[int, ...]:
    """Split runs (e.g. animals' neurons) into chunks of at most ``limit``."""
    out = []
    for size in sizes:
        full, rest = divmod(int(size), limit)
        out += [limit] * full + ([rest] if rest else [])
    return tuple(out) or (0,)


def _block(path: str, lo: int, hi: int, *args) -> np.ndarray:
    """Dask task: read a store slice and bin it (top-level so it pickles)."""
    spikes = read_spikes(path, lo, hi) if hi > lo else np.empty(0)
    return count_block(spikes, *args)


def _spike_count(rows: Rows, paths: list[str], shape: tuple[int, int, int], time: np.ndarray,
                 dt: float, post: float, durations: np.ndarray, neuron_runs: np.ndarray,
                 chunk_bytes: int) -> da.Array:
    """The lazy ``spike_count`` array: one task per (stim chunk, neuron chunk)."""
    n_stim, n_neuron, n_trial = shape
    cell_bytes = max(1, n_trial * time.size * 4)
    neuron_chunks = _chunks(neuron_runs, max(1, min(n_neuron or 1, chunk_bytes // cell_bytes)))
    stim_step = max(1, chunk_bytes // (cell_bytes * max(neuron_chunks)))
    stim_chunks = _chunks(np.array([n_stim]), stim_step)
    s_bounds, n_bounds = np.cumsum((0,) + stim_chunks), np.cumsum((0,) + neuron_chunks)
    s_block = np.searchsorted(s_bounds, rows.stim, side="right") - 1
    n_block = np.searchsorted(n_bounds, rows.neuron, side="right") - 1
    order = np.lexsort((np.arange(rows.stim.size), n_block, s_block))
    key = s_block[order] * len(neuron_chunks) + n_block[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    by_block = dict(zip(key[np.r_[0, cuts]] if key.size else [], np.split(order, cuts)))
    name = "spike_count-" + tokenize(paths, shape, time, dt, post, rows.stim, rows.neuron, chunk_bytes)
    dsk = {}
    for i, (s0, s1) in enumerate(zip(s_bounds[:-1], s_bounds[1:])):
        for j, (n0, n1) in enumerate(zip(n_bounds[:-1], n_bounds[1:])):
            idx = by_block.get(i * len(neuron_chunks) + j, np.empty(0, int))
            bshape = (int(s1 - s0), int(n1 - n0), n_trial)
            cell = ((rows.stim[idx] - s0) * bshape[1] + rows.neuron[idx] - n0) * n_trial + rows.trial[idx]
            path = paths[rows.path[idx[0]]] if idx.size else ""
            start, size = rows.start[idx], rows.size[idx]
            lo = int(start.min()) if idx.size else 0
            hi = int((start + size).max()) if idx.size else 0
            dsk[(name, i, j, 0, 0)] = (
                _block, path, lo, hi, start - lo, size, cell, durations[rows.stim[idx]],
                rows.values["pre_time"][idx], rows.values["post_time"][idx], bshape, time, dt,
                durations[s0:s1], post,
            )
    return da.Array(dsk, name, chunks=(stim_chunks, neuron_chunks, (n_trial,), (time.size,)),
                    dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))


def _collect(root: Path, paths: dict, sort_types, stim_types) -> tuple[pd.DataFrame, pd.DataFrame, Rows, pd.DataFrame]:
    """Read the stores' tables; keep chosen units and stimulus types; place rows.

    Also returns where each stimulus's sound may be: one row per (animal,
    number) of every stimulus group of the opened animals.
    """
    units, groups, raw, sources, group_md5, offset = [], [], [], [], [], 0
    for a, (animal, path) in enumerate(paths.items()):
        tables = load_tables(path, names=COLLECTED)
        u, g = _units_table(animal, tables), _groups_table(tables)
        unit_kept = u["sort_type"].isin(sort_types).to_numpy() if sort_types else np.ones(len(u), bool)
        group_kept = g["stim_type"].isin(stim_types).to_numpy() if stim_types else np.ones(len(g), bool)
        group_kept = group_kept & unit_kept[tables["group_unit"].values.astype(int)]
        row_g, row_u = tables["row_group"].values, tables["row_unit"].values
        keep = group_kept[row_g] & unit_kept[row_u]
        starts = np.concatenate([[0], np.cumsum(tables["row_size"].values)[:-1]]).astype("i8")
        raw.append({
            "path": np.full(keep.sum(), a), "unit": row_u[keep] + offset, "group": row_g[keep],
            "trial": tables["row_trial"].values[keep], "start": starts[keep], "size": tables["row_size"].values[keep],
            **{k: tables[f"row_{k}"].values[keep] for k in TRIAL_ATTRS},
            **{k: g[k].values[row_g[keep]] for k in ("zscore", "tstat", "pvalue")},
            "protocol": tables["group_protocol"].values.astype(str)[row_g[keep]],
            "trial_name": tables["row_trial_name"].values.astype(str)[keep],
        })
        sources.append(_sound_sources(root, animal, g["md5"].to_numpy(), tables))
        units.append(u[unit_kept].assign(_old=np.flatnonzero(unit_kept) + offset))
        offset += len(u)
        where = [f"{animal}/{u['cell_id'].iat[int(unit)]}.h5:/{protocol}/{number}" for unit, protocol, number in
                 zip(tables["group_unit"].values, tables["group_protocol"].values, tables["group_number"].values)]
        groups.append(g.assign(where=where)[group_kept])
        group_md5.append(g["md5"].to_numpy())
    units_df = pd.concat(units, ignore_index=True)
    stims = stim_order(stimulus_table(pd.concat(groups, ignore_index=True))).reset_index(drop=True)
    cat = {k: np.concatenate([r[k] for r in raw]) for k in raw[0]}
    by_md5 = pd.Index(stims["md5"])  # place groups (not rows) by md5: one lookup per group
    stim_pos = np.concatenate([by_md5.get_indexer(g_md5)[r["group"]] for g_md5, r in zip(group_md5, raw)])
    neuron_pos = pd.Index(units_df["_old"]).get_indexer(cat["unit"])
    rows = Rows(path=cat["path"], stim=stim_pos, neuron=neuron_pos, trial=cat["trial"].astype("i8"),
                start=cat["start"], size=cat["size"].astype("i8"),
                values={k: cat[k] for k in (*TRIAL_ATTRS, "zscore", "tstat", "pvalue")},
                labels={k: cat[k] for k in ("protocol", "trial_name")})
    sources = pd.concat(sources, ignore_index=True).sort_values("by_name", ascending=False, kind="stable")
    return stims, units_df.drop(columns="_old"), rows, sources.drop(columns="by_name")


def _sound_sources(root: Path, animal: str, md5: np.ndarray, tables: xr.Dataset) -> pd.DataFrame:
    """Where each stimulus group's sound may be: first the file named by its
    ``tdt_wavfile`` (the part after ``Stims/``), then ``stim<number>.wav``."""
    folder = root / animal / "wavfiles"
    numbered = pd.DataFrame({"md5": md5, "animal": animal, "number": tables["group_number"].values.astype(int)})
    numbered["path"] = [str(folder / f"stim{n}.wav") for n in numbered["number"]]
    tdt = tables["group_tdt_wavfile"].values.astype(str) if "group_tdt_wavfile" in tables else np.full(md5.size, "")
    named = numbered.assign(path=[str(folder / wav_file_name(t)) if wav_file_name(t) else "" for t in tdt])
    return pd.concat([named[named["path"] != ""].assign(by_name=True), numbered.assign(by_name=False)],
                     ignore_index=True).drop_duplicates(["md5", "path"])


def _dense_labels(rows: Rows, shape: tuple, key: str) -> np.ndarray:
    """Per-trial strings on the (stim, neuron, trial) grid, ``""`` where there is no trial."""
    labels = rows.labels[key]
    out = np.full(shape, "", dtype=f"<U{max(1, max(map(len, labels), default=1))}")
    out[rows.stim, rows.neuron, rows.trial] = labels
    return out


def _dense(rows: Rows, shape: tuple, key: str, first_trial: bool = False) -> np.ndarray:
    out = np.full(shape if not first_trial else shape[:2], np.nan, np.float32)
    if first_trial:
        pick = rows.trial == 0
        out[rows.stim[pick], rows.neuron[pick]] = rows.values[key][pick]
    else:
        out[rows.stim, rows.neuron, rows.trial] = rows.values[key]
    return out


#: Label coordinates given an index, so ``ds.sel(stim_type="song")`` just works.
INDEXED = ("stim_type", "call_type", "stim_class", "animal", "sex", "site", "sort_type")


def index_coords(ds: xr.Dataset) -> xr.Dataset:
    """Index aa4xr's label coordinates so ``.sel`` accepts them.

    ``open_aa4`` does this already; netCDF does not store indexes, so apply it
    again after ``xr.open_dataset`` of an exported file.

    Examples
    --------
    >>> ds = index_coords(open_aa4())
    >>> songs = ds.sel(stim_type="song")
    """
    for name in INDEXED:
        if name in ds.coords and name not in ds.xindexes:
            ds = ds.set_xindex(name)
    return ds


def export_encoding(spike_count: xr.DataArray) -> dict:
    """netCDF encoding of ``spike_count``: zlib level 1 with shuffle, one stimulus
    by up to 64 neurons by all trials and bins per HDF5 chunk.

    Counts are small integers in float32, so shuffle + zlib shrinks them many
    times at little CPU cost; a chunk of one stimulus keeps reading one
    stimulus's population (the common access) to a few chunks.
    """
    s, n, r, t = spike_count.shape
    if not min(s, n, r, t):
        return {}
    return {"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": (1, min(n, 64), r, t),
            "original_shape": spike_count.shape}


def open_aa4(root=None, *, animals: Iterable[str] | str | None = None,
             stim_types: Iterable[str] | str | None = None,
             sort_types: Iterable[str] | str | None = ("single", "multi"),
             dt: float = 0.005, pre: float = 0.0, post: float = 0.0, errors: str = "raise",
             spectrogram: bool = True, waveform: bool = False, audio_fs: float = 24000.0,
             window_ms: float = 10.0, n_mels: int = 32, fmin: float = 0.0, fmax: float | None = None,
             compression: str = "cubic", chunk_mb: float = 8.0, processes: int | None = None, executor: Executor | None = None,
             progress: bool | None = None) -> xr.Dataset:
    """Open an AA4 corpus as one lazy ``(stim, neuron, trial, time)`` Dataset.

    The first open of a root reads its HDF5 files once into the spike-time
    store (see :func:`aa4xr.open_spike_times`); later opens, at any ``dt`` or
    window, read only the store. ``spike_count`` is a dask array computed
    chunk by chunk from exact spike times; nothing of the dense size is held.

    Parameters
    ----------
    root : path, optional
        The folder holding ``<animal>/`` folders; the built-in sample when None.
    animals : str or list of str, optional
        Animals to open (default: all found).
    stim_types : str or list of str, optional
        Any of ``"song"``, ``"call"``, ``"mlnoise"`` (default: all).
    sort_types : str or list of str or None
        Units to keep by sort type (``"singl"`` counts as ``"single"``);
        None keeps every unit.
    dt : float
        Bin width in seconds.
    pre, post : float
        Seconds kept before each stimulus's onset and after its end.
    errors : {"raise", "warn"}
        An unreadable unit file raises an error naming it, or with ``"warn"``
        is skipped with a warning naming it.
    spectrogram : bool
        Add ``spectrogram (stim, frequency, time)``: a mel spectrogram of each
        stimulus's sound on the response bins (see
        :func:`aa4xr.stimuli.stimulus_spectrograms`; ``window_ms``,
        ``n_mels``, ``fmin``, ``fmax`` and ``compression`` pass through).
    waveform : bool
        Add ``waveform (stim, sample)`` resampled to ``audio_fs`` Hz.
    chunk_mb : float
        Target size of one ``spike_count`` chunk.
    processes, executor, progress
        Ingest: worker processes, or any ``concurrent.futures.Executor``
        (e.g. ``distributed.Client(...).get_executor()``); a progress bar
        over files (default: when stderr is a terminal).

    Returns
    -------
    xarray.Dataset
        The data model of aa4xr's DESIGN.md: ``spike_count``, ``n_trials``,
        per-trial ``bg_rate``, ``peri_rate``, ``pre_time``, ``post_time``
        and per-pair ``zscore``, ``tstat``, ``pvalue``; NaN where there is
        no data.

    Examples
    --------
    >>> ds = open_aa4(dt=0.01, pre=0.1)
    >>> songs = ds.sel(stim_type="song")
    >>> psth = ds.spike_count.mean("trial")
    """
    check_errors(errors)
    check_grid(dt, pre, post)
    animals = check_names(animals, "animals")
    sort_types = check_choices(sort_types, "sort_types", SORT_TYPES)
    stim_types = check_choices(stim_types, "stim_types", STIM_TYPES)
    chunk_mb = check_size_mb(chunk_mb, "chunk_mb")
    processes = check_count(processes, "processes")
    root = resolve_root(root)
    paths = store_paths(root, animals, errors=errors, processes=processes, executor=executor,
                        progress=progress)
    stims, units, rows, sources = _collect(root, paths, sort_types, stim_types)
    n_trials = np.zeros((len(stims), len(units)), "i8")
    np.add.at(n_trials, (rows.stim, rows.neuron), 1)
    shape = (len(stims), len(units), int(n_trials.max(initial=0)))
    durations = stims["duration"].to_numpy("f8")
    time = time_grid(durations, dt, pre, post)
    runs = units.groupby("animal", sort=False).size().to_numpy()
    spike_count = _spike_count(rows, [str(p) for p in paths.values()], shape, time, dt, post, durations,
                               runs, int(chunk_mb * 2**20))
    sn, snt = ("stim", "neuron"), ("stim", "neuron", "trial")
    ds = xr.Dataset(
        {
            "spike_count": (snt + ("time",), spike_count),
            "n_trials": (sn, n_trials),
            **{k: (snt, _dense(rows, shape, k)) for k in TRIAL_ATTRS},
            **{k: (sn, _dense(rows, shape, k, first_trial=True)) for k in ("zscore", "tstat", "pvalue")},
            **{k: (snt, _dense_labels(rows, shape, k)) for k in ("protocol", "trial_name")},
        },
        coords={
            "stim": stims["md5"].to_numpy(object),
            **{k: ("stim", stims[k].to_numpy(object if k != "duration" else "f8")) for k in STIM_COORDS},
            "neuron": units["neuron"].to_numpy(object),
            **{k: ("neuron", units[k].to_numpy() if units[k].dtype.kind in "if" else units[k].to_numpy(object))
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
    ds["spike_count"].encoding = export_encoding(ds["spike_count"])
    ds = index_coords(ds)
    if spectrogram or waveform:
        sounds = locate_sounds(sources, stims.set_index("md5")["duration"], cache_dir=cache_dir() / "md5")
        if spectrogram:
            ds = ds.merge(stimulus_spectrograms(sounds, time, dt, post, window_ms=window_ms, n_mels=n_mels,
                                                fmin=fmin, fmax=fmax, compression=compression,
                                                cache_dir=cache_dir() / "spectrograms"))
        if waveform:
            ds = ds.merge(stimulus_waveforms(sounds, audio_fs=audio_fs))
    ds["zscore"].attrs["note"] = "first protocol group (by name) of the pair"
    return ds
