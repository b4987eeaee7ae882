"""``open_aa4``: the AA4 corpus as one lazy, labelled xarray Dataset."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from ._validate import check_choices, warn_user  # noqa: F401  (check_choices: re-exported for report)
from .indexes import LabelIndex
from .layout import resolve_root, wav_file_name
from .read import TRIAL_ATTRS
from .store import DURATION_TOLERANCE, load_tables, stim_order, stimulus_table

STIM_TYPES = ("song", "call", "mlnoise")
SORT_TYPES = ("single", "multi", "noise", "tdt")
#: Per-trial strings, made on access from codes (at 1 ms on the full corpus they would take 240 MB).
LABELS = ("protocol", "trial_name")
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
    labels: dict            # protocol and trial_name: (code of each row, the distinct strings coded)


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


def _collect(root: Path, paths: dict, sort_types, stim_types) -> tuple[pd.DataFrame, pd.DataFrame, Rows, pd.DataFrame]:
    """Read the stores' tables; keep chosen units and stimulus types; place rows.

    Also returns where each stimulus's sound may be: one row per (animal,
    number) of every stimulus group of the opened animals. Everything is
    whole-array numpy: per-group and per-row strings are converted once per
    distinct value, never one Python object per row.
    """
    units, groups, raw, sources, group_md5, places, offset, coded = [], [], [], [], [], [], 0, [0, 0]
    for a, (animal, path) in enumerate(paths.items()):
        tables = load_tables(path, names=COLLECTED)
        u, g = _units_table(animal, tables), _groups_table(tables)
        unit_kept = u["sort_type"].isin(sort_types).to_numpy() if sort_types else np.ones(len(u), bool)
        group_kept = g["stim_type"].isin(stim_types).to_numpy() if stim_types else np.ones(len(g), bool)
        group_unit = tables["group_unit"].values.astype(int)
        group_kept = group_kept & unit_kept[group_unit]
        row_g, row_u = tables["row_group"].values, tables["row_unit"].values
        keep = group_kept[row_g] & unit_kept[row_u]
        starts = np.concatenate([[0], np.cumsum(tables["row_size"].values)[:-1]]).astype("i8")
        protocols = np.asarray(tables["group_protocol"].values, str)
        trial_codes, trial_names = pd.factorize(tables["row_trial_name"].values[keep])
        raw.append({
            "path": np.full(keep.sum(), a), "unit": row_u[keep] + offset, "group": row_g[keep],
            "trial": tables["row_trial"].values[keep], "start": starts[keep], "size": tables["row_size"].values[keep],
            **{k: tables[f"row_{k}"].values[keep] for k in TRIAL_ATTRS},
            **{k: g[k].values[row_g[keep]] for k in ("zscore", "tstat", "pvalue")},
            "protocol": row_g[keep] + coded[0], "protocols": protocols,
            "trial_name": trial_codes + coded[1], "trial_names": np.asarray(trial_names).astype(str),
        })
        coded = [coded[0] + protocols.size, coded[1] + trial_names.size]
        sources.append(_sound_sources(root, animal, g["md5"].to_numpy(), tables))
        units.append(u[unit_kept].assign(_old=np.flatnonzero(unit_kept) + offset))
        offset += len(u)
        groups.append(g[group_kept])
        places.append((animal, u["cell_id"].to_numpy()[group_unit][group_kept], protocols[group_kept],
                       tables["group_number"].values[group_kept]))
        group_md5.append(g["md5"].to_numpy())
    units_df = pd.concat(units, ignore_index=True)
    groups = pd.concat(groups, ignore_index=True)
    stims = stim_order(stimulus_table(groups.assign(where=_group_places(groups, places)))).reset_index(drop=True)
    cat = {k: np.concatenate([r[k] for r in raw]) for k in raw[0]}
    by_md5 = pd.Index(stims["md5"])  # place groups (not rows) by md5: one lookup per group
    stim_pos = np.concatenate([by_md5.get_indexer(g_md5)[r["group"]] for g_md5, r in zip(group_md5, raw)])
    neuron_pos = pd.Index(units_df["_old"]).get_indexer(cat["unit"])
    rows = Rows(path=cat["path"], stim=stim_pos, neuron=neuron_pos, trial=cat["trial"].astype("i8"),
                start=cat["start"], size=cat["size"].astype("i8"),
                values={k: cat[k] for k in (*TRIAL_ATTRS, "zscore", "tstat", "pvalue")},
                labels={k: (cat[k], cat[f"{k}s"]) for k in ("protocol", "trial_name")})
    sources = pd.concat(sources, ignore_index=True).sort_values("by_name", ascending=False, kind="stable")
    return stims, units_df.drop(columns="_old"), rows, sources.drop(columns="by_name")


def _group_places(groups: pd.DataFrame, places: list[tuple]) -> np.ndarray:
    """``<animal>/<cell>.h5:/<protocol>/<number>`` of the groups whose stimulus's durations disagree, else ``""``.

    Only those name a group in :func:`aa4xr.store.stimulus_table`'s warning, so only they are formatted.
    """
    durations = groups.groupby("md5", sort=False)["duration"]
    bad = ((durations.transform("max") - durations.transform("min")) > DURATION_TOLERANCE).to_numpy()
    animal = np.concatenate([np.full(len(cells), name, object) for name, cells, _, _ in places])
    cell, protocol, number = (np.concatenate([p[i] for p in places]) for i in (1, 2, 3))
    where = np.full(len(groups), "", object)
    where[bad] = [f"{a}/{c}.h5:/{p}/{n}" for a, c, p, n in zip(animal[bad], cell[bad], protocol[bad], number[bad])]
    return where


def _sound_sources(root: Path, animal: str, md5: np.ndarray, tables: xr.Dataset) -> pd.DataFrame:
    """Where each stimulus group's sound may be: first the file named by its
    ``tdt_wavfile`` (the part after ``Stims/``), then ``stim<number>.wav``.

    Groups repeat (md5, number, tdt_wavfile) once per unit: paths are made once per distinct triple.
    """
    folder = str(root / animal / "wavfiles")
    tdt = tables["group_tdt_wavfile"].values.astype(str) if "group_tdt_wavfile" in tables else np.full(md5.size, "")
    distinct = pd.DataFrame({"md5": md5, "animal": animal, "number": tables["group_number"].values.astype(int),
                             "tdt": tdt}).drop_duplicates(["md5", "number", "tdt"])
    numbered = distinct[["md5", "animal", "number"]].assign(
        path=[os.path.join(folder, f"stim{n}.wav") for n in distinct["number"]])
    names = {t: os.path.join(folder, wav_file_name(t)) if wav_file_name(t) else "" for t in distinct["tdt"].unique()}
    named = numbered.assign(path=distinct["tdt"].map(names).to_numpy(str))
    return pd.concat([named[named["path"] != ""].assign(by_name=True), numbered.assign(by_name=False)],
                     ignore_index=True).drop_duplicates(["md5", "path"])


def _label_codes(rows: Rows, shape: tuple, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial strings on the (stim, neuron, trial) grid as codes into a table, ``""`` where there is no trial.

    ``table[codes]`` are the strings; see :class:`aa4xr.backend.LabelArray`.

    Examples
    --------
    >>> rows = Rows(*(np.array([0]),) * 6, values={}, labels={"protocol": (np.array([1]), np.array(["a", "bc"]))})
    >>> codes, table = _label_codes(rows, (1, 1, 2), "protocol")
    >>> table[codes].tolist()
    [[['bc', '']]]
    """
    codes, distinct = rows.labels[key]
    table = np.append(distinct, "") if codes.size else np.array([""])
    grid = np.full(shape, table.size - 1, np.int32)
    grid[rows.stim, rows.neuron, rows.trial] = codes
    return grid, table


def _dense(rows: Rows, shape: tuple, key: str, first_trial: bool = False) -> np.ndarray:
    out = np.full(shape if not first_trial else shape[:2], np.nan, np.float32)
    if first_trial:
        pick = rows.trial == 0
        out[rows.stim[pick], rows.neuron[pick]] = rows.values[key][pick]
    else:
        out[rows.stim, rows.neuron, rows.trial] = rows.values[key]
    return out


def index_coords(ds: xr.Dataset) -> xr.Dataset:
    """Index aa4xr's label and number coordinates so ``.sel`` accepts them; strings as fixed-width unicode.

    One :class:`aa4xr.indexes.LabelIndex` per dimension holds its
    coordinates (``stim_type`` ... ``duration`` on ``stim``, ``animal`` ...
    ``subsort_id`` on ``neuron``), so a value, a list, a numeric slice or a
    mask selects, several at once. ``open_aa4`` does this already; netCDF
    stores no indexes (and reads strings back as objects), so apply it after
    ``xr.open_dataset`` of an exported file with another engine than ``"aa4"``.

    Examples
    --------
    >>> ds = index_coords(open_aa4())
    >>> songs = ds.sel(stim_type=["song", "call"], duration=slice(0.5, None))
    """
    text = {name: xr.Variable(var.dims, var.values.astype(str), var.attrs, var.encoding)
            for name, var in ds.variables.items() if var.dtype == object and var.size
            and all(isinstance(v, str) for v in var.values.ravel()[:100])}
    for dim, names in (("stim", STIM_COORDS), ("neuron", NEURON_COORDS)):
        names = [n for n in names if n in ds.coords and ds[n].dims == (dim,)]
        indexed = [n for n in names if n in ds.xindexes]
        if names and indexed == names and isinstance(ds.xindexes[names[0]], LabelIndex) and not text.keys() & names:
            continue
        ds = ds.drop_indexes(indexed) if indexed else ds
        ds = ds.assign_coords({n: v for n, v in text.items() if n in [dim, *names]})
        if names:
            ds = ds.set_xindex(names, LabelIndex)
    rest = {n: v for n, v in text.items() if n not in ("stim", "neuron", *STIM_COORDS, *NEURON_COORDS)}
    return ds.assign_coords({n: v for n, v in rest.items() if n in ds.coords}).assign(
        {n: v for n, v in rest.items() if n not in ds.coords})


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
             compression: str = "cubic", chunk_mb: float = 32.0, processes: int | None = None,
             executor: Executor | None = None, progress: bool | None = None, rebuild: bool = False,
             chunks: dict | None = {}) -> xr.Dataset:
    """Open an AA4 corpus as one lazy ``(stim, neuron, trial, time)`` Dataset.

    The first open of a root reads its HDF5 files once into the spike-time
    store (see :func:`aa4xr.open_spike_times`); later opens, at any ``dt`` or
    window, read only the store. It is ``xr.open_dataset(root, engine="aa4",
    chunks={}, ...)``: ``spike_count`` is a dask array over the lazily indexed
    backend array of :mod:`aa4xr.backend`, chunked as the store lies; a
    selection bins only the cells it selects, a reduction streams chunk by
    chunk, and nothing of the dense size is held.

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
    chunks : dict or None
        xarray's ``chunks=``: ``{}`` (the store's chunks), any other
        chunking, or None for no dask (``spike_count`` stays a lazily indexed
        array that bins on access).
    processes, executor, progress
        Ingest: worker processes, or any ``concurrent.futures.Executor``
        (e.g. ``distributed.Client(...).get_executor()``); a progress bar
        over files (default: when stderr is a terminal).
    rebuild : bool
        Re-read the unit files into the spike-time store even when one exists.

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
    kwargs = dict(animals=animals, stim_types=stim_types, sort_types=sort_types, dt=dt, pre=pre, post=post,
                  errors=errors, spectrogram=spectrogram, waveform=waveform, audio_fs=audio_fs,
                  window_ms=window_ms, n_mels=n_mels, fmin=fmin, fmax=fmax, compression=compression,
                  chunk_mb=chunk_mb, processes=processes, executor=executor, progress=progress, rebuild=rebuild)
    chunks = dict(chunks) if isinstance(chunks, dict) else chunks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_dataset(str(resolve_root(root)), engine="aa4", chunks=chunks, **kwargs)
    for warning in caught:  # raised under xarray's frames: point them at the caller's line again
        warn_user(str(warning.message), warning.category)
    small = [var for name, var in ds.variables.items()
             if var.chunks is not None and not {"time", "sample"} & set(var.dims) and name not in LABELS]
    for var, values in zip(small, _in_memory([var.data for var in small])):
        var.data = values
    return ds


def _in_memory(arrays: list) -> list[np.ndarray]:
    """The values of dask arrays over in-memory arrays (the per-pair and per-trial tables), as the backend has them.

    One synchronous pass over their graphs (no scheduler lookup); a
    one-chunk array's block is taken as it is, where a compute would copy it.
    """
    from dask.array.core import concatenate3
    from dask.local import get_sync

    graph: dict = {}
    for array in arrays:
        graph.update(array.__dask_graph__())
    out = []
    for array, blocks in zip(arrays, get_sync(graph, [array.__dask_keys__() for array in arrays])):
        if array.npartitions > 1:
            out.append(concatenate3(blocks))
            continue
        while isinstance(blocks, (list, tuple)):
            blocks = blocks[0]
        out.append(np.asarray(blocks))
    return out
