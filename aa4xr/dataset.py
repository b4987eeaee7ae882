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
from .store import DURATION_TOLERANCE, Coded, read_columns, stim_order, stimulus_table

STIM_TYPES = ("song", "call", "mlnoise")
SORT_TYPES = ("single", "multi", "noise", "tdt")
#: Per-trial strings, made on access from codes (at 1 ms on the full corpus they would take 240 MB).
LABELS = ("protocol", "trial_name")
#: Per-trial variables placed from the store's rows on access (see :class:`aa4xr.backend.TrialArray`): an open
#: makes no (stim, neuron, trial) grid.
PER_TRIAL = (*TRIAL_ATTRS, *LABELS)
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


def _units_table(animal: str, columns: dict) -> pd.DataFrame:
    stem = _text(columns["unit_stem"])
    return pd.DataFrame({
        "neuron": [f"{animal}/{s}" for s in stem],
        "animal": animal,
        "sex": animal[-1] if animal[-1] in "FM" else "",
        "cell_id": stem,
        "site": _text(columns["unit_site"]),
        "sort_type": _text(columns["unit_sort_type"]),
        "electrode": columns["unit_electrode"].astype("i8"),
        "sort_id": columns["unit_sort_id"].astype("i8"),
        **{k: columns[f"unit_{k}"].astype("f8") for k in ("ldepth", "rdepth", "subsort_id")},
    })


def _text(column) -> np.ndarray:
    """A store column as fixed-width unicode."""
    return column.decode() if isinstance(column, Coded) else np.asarray(column, str)


def _coded(columns: dict, name: str, n: int) -> Coded:
    """A string column as :class:`~aa4xr.store.Coded`: one stored as numbers (all None) as their text,
    a missing one as ``""``."""
    column = columns.get(name)
    if isinstance(column, Coded):
        return column
    if column is None:
        return Coded(np.zeros(n, np.intp), np.array([""]))
    codes, labels = pd.factorize(np.asarray(column).astype(str))
    return Coded(codes, np.asarray(labels, str))


def _unified(parts: list[Coded]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct values of several coded columns together (sorted, ``""`` among them) and each one's codes into them.

    Examples
    --------
    >>> labels, codes = _unified([Coded(np.array([0, 1]), np.array(["b", "a"])), Coded(np.array([0]), np.array(["c"]))])
    >>> labels.tolist(), [c.tolist() for c in codes]
    (['', 'a', 'b', 'c'], [[2, 1], [3]])
    """
    labels = np.unique(np.concatenate([np.array([""]), *(p.labels for p in parts)]))
    return labels, [np.searchsorted(labels, p.labels).astype(np.int32)[p.codes] for p in parts]


def _name_codes(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer trial names as codes into their text: an offset into the run of names they span when it is short.

    Examples
    --------
    >>> codes, table = _name_codes(np.array([3, 1, 10]))
    >>> table[codes].tolist()
    ['3', '1', '10']
    """
    if names.size and int(names.max()) - int(names.min()) < 4096:
        low = int(names.min())
        return names - low, np.array([str(n) for n in range(low, int(names.max()) + 1)])
    codes, distinct = pd.factorize(names)
    return codes, np.array([str(n) for n in distinct], dtype=str) if len(distinct) else np.array([], "<U1")


#: The store variables ``open_aa4`` reads (the provenance strings stay on disk).
COLLECTED = (
    *(f"unit_{k}" for k in ("stem", "site", "sort_type", "electrode", "sort_id", "ldepth", "rdepth", "subsort_id")),
    *(f"group_{k}" for k in ("stim_md5", "stim_type", "callid", "stim_class", "stim_duration", "zscore", "tstat",
                             "pvalue", "number", "unit", "protocol", "tdt_wavfile")),
    *(f"row_{k}" for k in ("size", "unit", "group", "trial", "trial_name", *TRIAL_ATTRS)),
)
#: The stimulus groups' string columns, coded alike across animals.
GROUP_TEXT = ("stim_md5", "stim_type", "callid", "stim_class", "protocol", "tdt_wavfile")


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
    whole-array numpy on the store's string codes (coded alike across
    animals): a string is made once per distinct value, never per group or row.
    """
    read = [read_columns(path, COLLECTED) for path in paths.values()]
    n_groups = [c["group_unit"].size for c in read]
    text = {k: _unified([_coded(c, f"group_{k}", n) for c, n in zip(read, n_groups)]) for k in GROUP_TEXT}
    units, raw, groups, sources, places, offset = [], [], [], [], [], 0
    for a, (animal, c) in enumerate(zip(paths, read)):
        code = {k: codes[a] for k, (_, codes) in text.items()}
        u = _units_table(animal, c)
        unit_kept = u["sort_type"].isin(sort_types).to_numpy() if sort_types else np.ones(len(u), bool)
        group_kept = np.isin(text["stim_type"][0], stim_types)[code["stim_type"]] if stim_types \
            else np.ones(n_groups[a], bool)
        group_unit = c["group_unit"].astype(int)
        group_kept = group_kept & unit_kept[group_unit]
        row_g = c["row_group"]
        keep = group_kept[row_g]
        kept = (lambda v: v) if keep.all() else (lambda v: v[keep])  # noqa: E731  (no copy when all are kept)
        kept_g = kept(row_g)
        stats = {k: c.get(f"group_{k}", np.full(n_groups[a], np.nan)).astype(np.float32)
                 for k in ("zscore", "tstat", "pvalue")}
        raw.append({
            "path": np.full(kept_g.size, a, np.int32), "unit": kept(c["row_unit"]) + offset,
            "md5": code["stim_md5"][kept_g], "trial": kept(c["row_trial"]),
            "start": kept(np.cumsum(c["row_size"], dtype=np.int64) - c["row_size"]), "size": kept(c["row_size"]),
            **{k: kept(c[f"row_{k}"]) for k in TRIAL_ATTRS}, **{k: v[kept_g] for k, v in stats.items()},
            "protocol": code["protocol"][kept_g], "trial_name": kept(c["row_trial_name"]),
        })
        groups.append({"md5": code["stim_md5"][group_kept], "stim_type": code["stim_type"][group_kept],
                       "callid": code["callid"][group_kept], "stim_class": code["stim_class"][group_kept],
                       "duration": c["group_stim_duration"][group_kept].astype("f8")})
        places.append((animal, u["cell_id"].to_numpy()[group_unit][group_kept], code["protocol"][group_kept],
                       c["group_number"][group_kept]))
        sources.append(_sound_sources(root, animal, text, code, c["group_number"]))
        units.append(u[unit_kept].assign(_old=np.flatnonzero(unit_kept) + offset))
        offset += len(u)
    units_df = pd.concat(units, ignore_index=True)
    stims = stim_order(_plain(stimulus_table(_groups_frame(groups, places, text)))).reset_index(drop=True)
    cat = {k: np.concatenate([r[k] for r in raw]) if len(raw) > 1 else raw[0][k] for k in raw[0]}
    stim_of_md5 = pd.Index(stims["md5"]).get_indexer(text["stim_md5"][0])
    neuron_of_unit = np.full(offset, -1)
    neuron_of_unit[units_df["_old"].to_numpy()] = np.arange(len(units_df))
    rows = Rows(path=cat["path"], stim=stim_of_md5[cat["md5"]], neuron=neuron_of_unit[cat["unit"]], trial=cat["trial"],
                start=cat["start"], size=cat["size"],
                values={k: cat[k] for k in (*TRIAL_ATTRS, "zscore", "tstat", "pvalue")},
                labels={"protocol": (cat["protocol"], text["protocol"][0]), "trial_name": _name_codes(cat["trial_name"])})
    sources = pd.concat(sources, ignore_index=True).sort_values("by_name", ascending=False, kind="stable")
    return stims, units_df.drop(columns="_old"), rows, sources.drop(columns="by_name")


def _groups_frame(groups: list[dict], places: list[tuple], text: dict) -> pd.DataFrame:
    """The kept stimulus groups of all animals for :func:`aa4xr.store.stimulus_table`, strings as categoricals.

    ``where`` (``<animal>/<cell>.h5:/<protocol>/<number>``) is formatted only for the groups of stimuli
    whose durations disagree: only they are named in its warning.
    """
    cat = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
    labels = lambda k: text[k][0]  # noqa: E731
    is_call = (labels("stim_type") == "call")[cat["stim_type"]]
    call_type = np.where(is_call, cat["callid"], np.searchsorted(labels("callid"), ""))
    md5, duration = cat["md5"], cat["duration"]
    high, low = np.full(labels("stim_md5").size, -np.inf), np.full(labels("stim_md5").size, np.inf)
    np.maximum.at(high, md5, duration)
    np.minimum.at(low, md5, duration)
    bad = ((high - low) > DURATION_TOLERANCE)[md5]
    where = np.full(md5.size, "", object)
    if bad.any():
        animal = np.concatenate([np.full(len(cells), name, object) for name, cells, _, _ in places])
        cell, protocol, number = (np.concatenate([p[i] for p in places]) for i in (1, 2, 3))
        where[bad] = [f"{a}/{c}.h5:/{p}/{n}" for a, c, p, n in
                      zip(animal[bad], cell[bad], labels("protocol")[protocol[bad]], number[bad])]
    category = lambda codes, k: pd.Categorical.from_codes(codes, labels(k))  # noqa: E731
    return pd.DataFrame({"md5": category(md5, "stim_md5"), "stim_type": category(cat["stim_type"], "stim_type"),
                         "call_type": category(call_type, "callid"), "stim_class": category(cat["stim_class"], "stim_class"),
                         "duration": duration, "where": where})


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as their values (sorting then follows the values, not the categories)."""
    return table.astype({k: str for k, dtype in table.dtypes.items() if isinstance(dtype, pd.CategoricalDtype)})


def _sound_sources(root: Path, animal: str, text: dict, code: dict, number: np.ndarray) -> pd.DataFrame:
    """Where each stimulus group's sound may be: first the file named by its
    ``tdt_wavfile`` (the part after ``Stims/``), then ``stim<number>.wav``.

    Groups repeat (md5, number, tdt_wavfile) once per unit: paths are made once per distinct triple.
    """
    folder = str(root / animal / "wavfiles")
    distinct = pd.DataFrame({"md5": code["stim_md5"], "number": number.astype(int),
                             "tdt": code["tdt_wavfile"]}).drop_duplicates()
    numbered = pd.DataFrame({"md5": text["stim_md5"][0][distinct["md5"].to_numpy()], "animal": animal,
                             "number": distinct["number"].to_numpy(),
                             "path": [os.path.join(folder, f"stim{n}.wav") for n in distinct["number"]]})
    tdt = distinct["tdt"].to_numpy()
    names = {t: wav_file_name(str(text["tdt_wavfile"][0][t])) for t in np.unique(tdt)}
    named = numbered.assign(path=[os.path.join(folder, names[t]) if names[t] else "" for t in tdt])
    return pd.concat([named[named["path"] != ""].assign(by_name=True), numbered.assign(by_name=False)],
                     ignore_index=True).drop_duplicates(["md5", "path"])


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
        array that bins on access). Either way ``spike_count.load()`` fills
        one array in place (about 1.1x its dense size at the peak; see
        :mod:`aa4xr.inplace`).
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
             if var.chunks is not None and not {"time", "sample"} & set(var.dims) and name not in PER_TRIAL]
    for var, values in zip(small, _in_memory([var.data for var in small])):
        var.data = values
    if chunks is not None:  # .load() of the whole spike_count fills one array (see aa4xr.inplace)
        from .backend import direct_reader
        from .inplace import in_place

        found = direct_reader(ds["spike_count"])
        if found is not None:
            ds["spike_count"].variable.data = in_place(ds["spike_count"].data, found[0])
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
