"""The ragged spike-time store: every spike time of an animal, read once.

One netCDF file per animal holds its exact spike times as a CF "contiguous
ragged array": a flat ``spike_time (spike)`` and one row per (stimulus group,
unit, trial) with its ``row_size``, plus the unit and stimulus-group tables
with every attribute the HDF5 files hold. The file name carries a fingerprint
of the animal's unit files (names, sizes, mtimes) and of :data:`FORMAT_VERSION`,
so a store is reused while the files are unchanged and rebuilt otherwise.

Rows are ordered by stimulus (see :func:`stim_order`), then unit, then
protocol name and numeric trial name: a pair's trials are contiguous and in
presentation order, and a run of stimuli is a contiguous run of rows.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import h5netcdf
import h5py
import numpy as np
import pandas as pd
import xarray as xr

from ._cache import atomic_write, cache_dir, clean_stale_tmp  # noqa: F401  (cache_dir re-exported)
from ._validate import warn_user
from .layout import find_animals, find_other_files, find_unit_files, resolve_root, select_animals
from .read import KNOWN_ATTRS, TRIAL_ATTRS, Unit, UnitFileError, read_unit

#: Bump when the store's content or layout changes; old stores are then ignored.
FORMAT_VERSION = 4
#: The trial table's own columns (the rest are the trial groups' other attributes).
TRIAL_COLUMNS = ("group", "trial_name", "presentation", "count", "first_id", "last_id", *TRIAL_ATTRS)
#: Unit attributes parsed from the file name rather than read from the file.
NAME_FIELDS = frozenset({"ldepth", "rdepth", "electrode", "sort_id", "subsort_id", "site", "sort_type"})
ERRORS = ("raise", "warn")
#: The attribute of a string column's codes naming the variable of its distinct values.
LABELS_ATTR = "aa4xr_labels"


def fingerprint(files: pd.DataFrame) -> str:
    """Hash of unit file names, sizes and mtimes and of the store format.

    Examples
    --------
    >>> files = pd.DataFrame({"animal": ["A"], "stem": ["u"], "size": [1], "mtime_ns": [2]})
    >>> len(fingerprint(files))
    16
    """
    keys = files[["animal", "stem", "size", "mtime_ns"]].astype(str).values.tolist()
    payload = json.dumps([FORMAT_VERSION, keys]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def stim_order(stims: pd.DataFrame) -> pd.DataFrame:
    """Sort a table with ``stim_type``, ``call_type`` and ``md5`` columns the aa4xr way."""
    return stims.sort_values(["stim_type", "call_type", "md5"], kind="stable")


#: Durations of one stimulus's groups may differ by rounding; more than a sample is a disagreement.
DURATION_TOLERANCE = 1 / 24414.0625


def duration_disagreements(groups: pd.DataFrame) -> pd.DataFrame:
    """The md5s whose groups disagree on ``duration`` by more than a sample.

    One row per such md5: ``md5``, ``durations`` (the distinct values, s) and
    ``groups`` (where each value stands, from the ``where`` column).

    Examples
    --------
    >>> g = pd.DataFrame({"md5": ["a", "a", "b"], "duration": [1.0, 1.5, 2.0], "where": ["x", "y", "z"]})
    >>> duration_disagreements(g)["md5"].tolist()
    ['a']
    """
    duration = groups.groupby("md5", observed=True)["duration"]
    spread = duration.max() - duration.min()
    bad = groups[groups["md5"].isin(spread.index[spread > DURATION_TOLERANCE])]
    return pd.DataFrame([{"md5": md5, "durations": sorted(set(g["duration"])),
                          "groups": "; ".join(f"{w} = {d:.6g} s" for w, d in zip(g["where"], g["duration"]))}
                         for md5, g in bad.groupby("md5", sort=False, observed=True)],
                        columns=["md5", "durations", "groups"])


def stimulus_table(groups: pd.DataFrame) -> pd.DataFrame:
    """One row per md5 from all its stimulus groups: ``duration`` is their median.

    Groups that disagree by more than a sample (:data:`DURATION_TOLERANCE`)
    get a warning naming them and their values; no single group decides.
    """
    for row in duration_disagreements(groups).itertuples():
        warn_user(f"stimulus {row.md5}: stim_duration differs between groups by more than a sample "
                  f"({row.groups}); using the median")
    durations = groups.groupby("md5", sort=False, observed=True)["duration"].median()
    stims = groups.drop_duplicates("md5").drop(columns="where", errors="ignore")
    return stims.assign(duration=durations.loc[stims["md5"]].to_numpy())


def _read_or_error(path: str) -> Unit | str:
    """Worker: a unit, or the error message naming the file.

    The reader's warnings are silenced here: a worker's would be lost, and the
    store warns about the same facts on every open (see :func:`store_paths`).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_unit(path)
    except UnitFileError as exc:
        return str(exc)


class Var(NamedTuple):
    """One variable of a store: its dimension, values (1-D) and attributes."""

    dim: str
    values: np.ndarray
    attrs: dict


@dataclass(frozen=True)
class Store:
    """A store in memory, as :func:`_assemble` makes it and :func:`_write_netcdf` writes it."""

    variables: dict[str, Var]
    attrs: dict

    @property
    def nbytes(self) -> int:
        """Bytes of all values."""
        return sum(var.values.nbytes for var in self.variables.values())


def _table_to_vars(table: pd.DataFrame, prefix: str, dim: str) -> dict[str, Var]:
    """Columns -> netCDF-legal variables: numbers as float64/int, strings as codes.

    A string column ``<prefix><col>`` is stored as int32 codes into the
    variable named by its ``aa4xr_labels`` attribute (``labels_<prefix><col>``,
    its distinct values, on a dimension of its own): a table of ~10^5 groups
    then reads as a few arrays of numbers, not 10^5 variable-length strings,
    and its grouping is already done (see :func:`read_columns`).
    """
    out = {}
    for col in table.columns:
        name = f"{prefix}{col}"
        values = _column_values(table[col])
        if values.dtype != object:
            out[name] = Var(dim, values, {})
            continue
        codes, labels = pd.factorize(values)
        out[name] = Var(dim, codes.astype("i4"), {LABELS_ATTR: f"labels_{name}"})
        out[f"labels_{name}"] = Var(f"labels_{name}", np.asarray(labels, dtype=object),
                                    {"long_name": f"the distinct values of {name}, indexed by its codes"})
    return out


def _is_number(value) -> bool:
    """Whether a table value is stored as a number: None, an int or a float, never a bool."""
    return value is None or isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _column_values(values: pd.Series) -> np.ndarray:
    """A column as stored: numbers as they are, a column of only numbers and missing values as float64,
    any other as an object array of strings (``None`` -> ``""``, any other value -> ``str(value)``).

    A ``str`` column (missing values NaN, whose ``str`` is ``"nan"``) takes a vectorised path; other
    columns (mixed objects, booleans) are converted value by value.

    Examples
    --------
    >>> _column_values(pd.Series(["a", None, 1.5], dtype=object)).tolist()
    ['a', '', '1.5']
    >>> _column_values(pd.Series([1, None], dtype=object)).tolist()
    [1.0, nan]
    >>> _column_values(pd.Series(["b", float("nan")], dtype="str")).tolist()
    ['b', 'nan']
    """
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
        return values.to_numpy()
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.na_value is np.nan:
        if values.isna().all():
            return np.full(len(values), np.nan)
        return values.fillna("nan").to_numpy(dtype=object)
    if values.map(_is_number).all():
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype="f8")
    return values.map(lambda v: "" if v is None else str(v)).to_numpy(dtype=object)


def _unit_row(animal: str, stem: str, unit: Unit) -> dict:
    """A unit's attributes plus how its file was read (see ``aa4xr check``)."""
    f = unit.features
    unknown = sorted({f"root:{k}" for k in unit.attrs if k not in KNOWN_ATTRS["unit"] and k not in NAME_FIELDS}
                     | {f"group:{k}" for k in unit.groups.columns if k not in KNOWN_ATTRS["group"]
                        and k not in ("protocol", "number", "trial_rule")}
                     | {f"trial:{k}" for k in unit.trials.columns if k not in KNOWN_ATTRS["trial"]
                        and k not in TRIAL_COLUMNS})
    counts = lambda c: ";".join(f"{k}={v}" for k, v in sorted(c.items()))  # noqa: E731
    return {"animal": animal, "stem": stem, **unit.attrs,
            "reader": f.reader, "fallback": f.fallback, "superblock": -1 if f.superblock is None else f.superblock,
            "writer": f.writer(), "strings": counts(f.strings), "numbers": counts(f.numbers),
            "shapes": counts(f.shapes), "trial_rule": unit.trial_rule,
            "rule_disagreements": ";".join(unit.disagreements), "unknown_attrs": ";".join(unknown)}


#: The group and trial tables of an animal without units.
EMPTY_GROUPS = ("protocol", "number", "stim_md5", "stim_type", "stim_duration", "unit")
EMPTY_TRIALS = (*TRIAL_COLUMNS, "unit")


def _stack(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The units' tables one under the other, with a column ``unit``: each row's index into ``tables``.

    One ``concat``; the columns are in the order ``concat`` gives ``table.assign(unit=i)`` (the union of
    the tables' columns, in order of first appearance).

    Examples
    --------
    >>> _stack([pd.DataFrame({"a": [1]}), pd.DataFrame({"a": [2], "b": [3]})]).columns.tolist()
    ['a', 'unit', 'b']
    """
    columns = list(dict.fromkeys(c for t in tables for c in (t.columns if "unit" in t.columns else
                                                            [*t.columns, "unit"])))
    stacked = pd.concat(tables, ignore_index=True)
    stacked["unit"] = np.repeat(np.arange(len(tables)), [len(t) for t in tables])
    return stacked if stacked.columns.tolist() == columns else stacked[columns]


def _stim_rank(groups: pd.DataFrame) -> np.ndarray:
    """Each group's stimulus's rank in :func:`stim_order` (the key its rows are sorted by).

    A stimulus is ranked by its first group's ``stim_type`` and (for calls) ``callid``.
    """
    first = groups.drop_duplicates("stim_md5")
    stims = pd.DataFrame({"md5": first["stim_md5"], "stim_type": first["stim_type"].astype(str),
                          "call_type": first.get("callid", pd.Series("", index=first.index)).fillna("").astype(str)})
    stims.loc[stims["stim_type"] != "call", "call_type"] = ""
    rank = {md5: i for i, md5 in enumerate(stim_order(stims)["md5"])}
    return groups["stim_md5"].map(rank).to_numpy()


def _runs(order: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Where runs start in ``order``: a run is a stretch of one unit's consecutive rows.

    Examples
    --------
    >>> _runs(np.array([2, 3, 0, 1, 4]), np.array([0, 0, 0, 1, 1])).tolist()  # rows 2 | 3 | 0, 1 | 4
    [0, 1, 2, 4]
    """
    new = np.ones(order.size, bool)
    new[1:] = (np.diff(order) != 1) | (unit[order[1:]] != unit[order[:-1]])
    return np.flatnonzero(new)


def _sorted_spikes(spikes: list[np.ndarray], unit: np.ndarray, counts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The units' spike times with their trials (rows of all units, ``counts`` spikes each) taken in ``order``.

    One copy per run of a unit's consecutive trials (see :func:`_runs`), into one array: no index
    array or concatenation the size of the spikes.

    Examples
    --------
    >>> spikes = [np.array([1., 2., 3.]), np.array([9.])]
    >>> _sorted_spikes(spikes, np.array([0, 0, 1]), np.array([1, 2, 1]), np.array([2, 1, 0])).tolist()
    [9.0, 2.0, 3.0, 1.0]
    """
    out = np.empty(int(counts.sum()), dtype=np.result_type(*{s.dtype for s in spikes}) if spikes else "f8")
    if not order.size:
        return out
    unit_start = np.cumsum([0] + [len(s) for s in spikes])
    offset = np.cumsum(counts) - counts - unit_start[unit]  # each row's start within its unit
    starts = _runs(order, unit)
    sizes = np.add.reduceat(counts[order], starts)
    destination = np.cumsum(sizes) - sizes
    for src, at, dst, n in zip(unit[order[starts]].tolist(), offset[order[starts]].tolist(),
                               destination.tolist(), sizes.tolist()):
        out[dst:dst + n] = spikes[src][at:at + n]
    return out


def _assemble(animal: str, stems: list[str], units: list[Unit], skipped: list[tuple[str, str]]) -> Store:
    """Tables of all units of one animal -> its store (rows sorted)."""
    unit_rows = [_unit_row(animal, stem, unit) for stem, unit in zip(stems, units)]
    if units:
        groups = _stack([unit.groups for unit in units])
        trials = _stack([unit.trials for unit in units])
        first_group = np.cumsum([0] + [len(unit.groups) for unit in units])
        trials["group"] = trials["group"].to_numpy() + first_group[trials["unit"].to_numpy()]
    else:
        groups = pd.DataFrame(columns=list(EMPTY_GROUPS))
        trials = pd.DataFrame({c: pd.Series(dtype="f8") for c in EMPTY_TRIALS})
    trial_unit = trials["unit"].to_numpy().astype(int)
    trial_group = trials["group"].to_numpy().astype(int)
    stim_rank = _stim_rank(groups)
    counts = trials["count"].to_numpy().astype("i8")
    order = np.argsort(stim_rank[trial_group].astype("i8") * max(len(units), 1) + trial_unit, kind="stable")
    spike_time = _sorted_spikes([unit.spike_times for unit in units], trial_unit, counts, order)
    trials = trials.iloc[order].reset_index(drop=True)
    trial_unit, trial_group = trial_unit[order], trial_group[order]
    extra = trials.drop(columns=list(EMPTY_TRIALS))

    variables = {
        "spike_time": Var("spike", spike_time, {"units": "s", "long_name": "spike time from stimulus onset"}),
        "row_size": Var("row", trials["count"].to_numpy("i4"),
                        {"sample_dimension": "spike", "long_name": "spikes in this trial"}),
        "row_unit": Var("row", trial_unit.astype("i4"), {"long_name": "index into unit_*"}),
        "row_group": Var("row", trial_group.astype("i4"), {"long_name": "index into group_*"}),
        "row_trial_name": Var("row", trials["trial_name"].to_numpy("i4"),
                              {"long_name": "the trial's group name in its unit file"}),
        "row_presentation": Var("row", trials["presentation"].to_numpy("i4"),
                                {"long_name": "presentation order within its stimulus group"}),
        "row_trial": Var("row", pair_position(stim_rank[trial_group], trial_unit),
                         {"long_name": "presentation order within the (stimulus, unit) pair"}),
        **{f"row_{k}": Var("row", trials[k].to_numpy("f8"),
                           {"long_name": f"{k.replace('_', ' ')} of spike_ids (NaN: no spike)"})
           for k in ("first_id", "last_id")},
        **{f"row_{k}": Var("row", trials[k].to_numpy("f8"), {"units": "Hz" if k.endswith("rate") else "s"})
           for k in TRIAL_ATTRS},
        **_table_to_vars(extra, "row_attr_", "row"),
        **_table_to_vars(pd.DataFrame(unit_rows), "unit_", "unit"),
        **_table_to_vars(groups, "group_", "group"),
        "skipped_file": Var("skipped", np.array([s for s, _ in skipped], dtype=object), {}),
        "skipped_reason": Var("skipped", np.array([r for _, r in skipped], dtype=object), {}),
    }
    return Store(variables, {"Conventions": "CF-1.8", "featureType": "aa4 ragged spike times", "animal": animal,
                             "aa4xr_format_version": FORMAT_VERSION})


class StoreError(OSError):
    """A spike-time store that cannot be read; the message names it and how to rebuild it."""


#: Elements per HDF5 chunk of the store's variables (each chunk carries a fletcher32 checksum).
CHUNK = 2**16


def _creation(values: np.ndarray) -> dict:
    """How a variable is created (``h5netcdf.File.create_variable`` keywords), as ``xarray.Dataset.to_netcdf``
    encodes it.

    Numbers get fletcher32 checksums in chunks of :data:`CHUNK`, so a corrupt block raises instead of
    misreading, and floats NaN as ``_FillValue``; strings are variable-length (HDF5 filters cannot apply
    to them). An empty column of strings is float64 without a fill value, as xarray writes it.

    Examples
    --------
    >>> _creation(np.zeros(3, "i4"))
    {'dtype': dtype('int32'), 'chunks': (3,), 'fletcher32': True}
    >>> _creation(np.array([], dtype=object))
    {'dtype': dtype('float64'), 'chunks': None}
    """
    if values.dtype.kind in "iuf":
        fill = {"fillvalue": np.nan} if values.dtype.kind == "f" else {}
        return {"dtype": values.dtype, "chunks": (max(1, min(CHUNK, values.size)),), "fletcher32": True, **fill}
    if values.size == 0:
        return {"dtype": np.dtype("f8"), "chunks": None}
    return {"dtype": h5py.string_dtype(), "chunks": None}


def _write_netcdf(store: Store, path: Path) -> None:
    """Write a store as netCDF-4 with h5netcdf: the file ``xarray.Dataset.to_netcdf(engine="h5netcdf")``
    writes (see :func:`_creation`), without xarray's encoding machinery and the dask it imports."""
    with h5netcdf.File(path, "w") as f:
        for key, value in store.attrs.items():
            f.attrs[key] = value
        for var in store.variables.values():
            if var.dim not in f.dimensions:
                f.dimensions[var.dim] = var.values.size
        for name, var in store.variables.items():
            created = f.create_variable(name, (var.dim,), **_creation(var.values))
            for key, value in var.attrs.items():
                created.attrs[key] = value
            created[...] = var.values


def check_cache_writable(folder: Path) -> None:
    """Fail early, naming the folder and ``$AA4XR_CACHE_DIR``, if stores cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StoreError(f"cannot write spike-time stores to {str(folder)!r} ({exc.strerror or exc}); point "
                         "$AA4XR_CACHE_DIR at a writable folder") from exc


def _write_atomic(store: Store, path: Path) -> None:
    """Write a store through :func:`aa4xr._cache.atomic_write`: a reader never sees half a store.

    A full disk is an error naming the folder and the space needed.
    """
    try:
        with atomic_write(path) as tmp:
            _write_netcdf(store, tmp)
    except (OSError, RuntimeError) as exc:
        free = shutil.disk_usage(path.parent).free
        needed = store.nbytes
        if free < 2 * needed:
            raise StoreError(f"no room to write the store {path.name} in {str(path.parent)!r}: about "
                             f"{needed / 2**20:.0f} MB needed, {free / 2**20:.0f} MB free on that disk; free "
                             "space or point $AA4XR_CACHE_DIR elsewhere") from exc
        raise


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the process that started us is gone."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """A tqdm bar: a widget in Jupyter when ipywidgets is installed, text otherwise.

    ``enabled=None`` shows it on a terminal and in Jupyter (not in logs or tests).
    """
    notebook = "ipykernel" in sys.modules
    if enabled is None:
        enabled = sys.stderr.isatty() or notebook
    if notebook and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, unit="step")


def _read_all(paths: list[str], processes: int | None, executor: Executor | None) -> Iterator[Unit | str]:
    """Read unit files in worker processes (or on ``executor``), yielding each result in order.

    Lazy: the workers read ahead while the caller stores what came back.
    """
    if executor is not None:
        yield from executor.map(_read_or_error, paths)
        return
    workers = min(processes or os.cpu_count() or 1, len(paths))
    if workers <= 1:
        yield from map(_read_or_error, paths)
        return
    pool = ProcessPoolExecutor(workers, initializer=_watch_parent, initargs=(os.getpid(),))
    try:
        yield from pool.map(_read_or_error, paths, chunksize=max(1, len(paths) // (16 * workers)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ingest(root: Path, found: dict[str, pd.DataFrame], *, errors: str, processes: int | None,
            executor: Executor | None, bar) -> dict[str, Path]:
    """Read the unit files ``found`` per animal and write each animal's store.

    The files of all animals go to the workers as one stream, so while one
    animal's store is assembled and written, the workers read the next one's files.
    """
    results = _read_all([path for files in found.values() for path in files["path"]], processes, executor)
    paths = {}
    try:
        for animal, files in found.items():
            path = store_path(root, animal, files)
            clean_stale_tmp(path.parent)
            bar.set_description(f"reading {animal}")
            stems, units, skipped = [], [], []
            for stem, file in zip(files["stem"], files["path"]):
                result = next(results)
                bar.update()
                if isinstance(result, Unit):
                    stems.append(stem)
                    units.append(result)
                elif errors == "raise":
                    raise UnitFileError(f"{result} (open with errors='warn' to skip unreadable files)")
                else:
                    warn_user(f"skipping unreadable unit file {result}")
                    skipped.append((file, result))
            bar.set_description(f"assembling {animal}")
            store = _assemble(animal, stems, units, skipped)
            del units
            bar.update()
            bar.set_description(f"writing {animal}")
            _write_atomic(store, path)
            bar.update()
            paths[animal] = path
    finally:
        results.close()
    return paths


def store_path(root: Path, animal: str, files: pd.DataFrame | None = None) -> Path:
    """Where the store of an animal's current unit files (``files``, found when None) lives;
    it may not exist yet."""
    files = find_unit_files(root, animal) if files is None else files
    return cache_dir() / "stores" / f"{animal}-{fingerprint(files)}.nc"


def _usable(path: Path, animal: str, rebuild: bool) -> Summary | None:
    """An existing store's :class:`Summary` when it can be used; None when it is to be (re)built.

    A store that does not verify is announced for rebuilding.
    """
    if rebuild or not path.exists():
        return None
    try:
        return summarize_store(path)
    except StoreError as exc:
        warn_user(f"rebuilding the spike-time store of {animal} from its unit files: {exc}")
        return None


def ingest_animal(root: Path, animal: str, *, errors: str = "raise", processes: int | None = None,
                  executor: Executor | None = None, bar=None, rebuild: bool = False) -> Path:
    """Build (once) the store of one animal and return its path.

    Unit files are read in worker processes (``processes``, default all
    cores) or on any ``concurrent.futures.Executor`` (e.g. a
    ``dask.distributed`` client's ``get_executor()``). A file that cannot be
    read raises :class:`~aa4xr.read.UnitFileError` naming it, or with
    ``errors="warn"`` is skipped with a warning and recorded in the store's
    ``skipped_file``/``skipped_reason``. An existing store that does not
    verify (see :func:`verify_store`) is rebuilt with a warning naming it;
    ``rebuild=True`` rebuilds it regardless. ``bar`` (see :func:`progress_bar`)
    ticks once per file, then once for assembling and once for writing.
    """
    files = find_unit_files(root, animal)
    path = store_path(root, animal, files)
    if _usable(path, animal, rebuild) is not None:
        return path
    bar = bar if bar is not None else progress_bar(len(files) + 2, f"reading {animal}", enabled=False)
    return _ingest(root, {animal: files}, errors=errors, processes=processes, executor=executor, bar=bar)[animal]


@dataclass(frozen=True)
class Summary:
    """What every open reports about a store: the unit files it skipped, ``[(file, reason)]``, and the
    units whose groups' ``spike_ids`` fit neither trial naming rule, ``[(stem, groups)]``."""

    skipped: list[tuple[str, str]]
    odd_rules: list[tuple[str, str]]


def summarize_store(path: Path) -> Summary:
    """Verify a store (see :func:`verify_store`) and read its :class:`Summary`, in one open."""
    try:
        with h5py.File(path, "r") as f:
            ok = (f.attrs.get("aa4xr_format_version") == FORMAT_VERSION
                  and int(f["row_size"][()].sum()) == f["spike_time"].shape[0])
            columns = _read_columns(f, ("skipped_file", "skipped_reason", "unit_stem", "unit_rule_disagreements")) \
                if ok else {}
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable ({exc})") from exc
    if not ok:
        raise StoreError(f"{path}: not a complete store of format {FORMAT_VERSION}")
    text = {k: v.decode() if isinstance(v, Coded) else v for k, v in columns.items()}
    return Summary(list(zip(text["skipped_file"].tolist(), text["skipped_reason"].tolist())),
                   [(stem, groups) for stem, groups in zip(text["unit_stem"].tolist(),
                                                           text["unit_rule_disagreements"].tolist()) if groups])


def verify_store(path: Path) -> None:
    """Check that a store opens, is of this format and is consistent; :class:`StoreError` if not.

    Cheap enough for every open: the format version, ``row_size`` (its
    fletcher32 checksums verified) against the length of ``spike_time``. The
    other variables' checksums are verified as they are read, and a failure
    there is a :class:`StoreError` naming the store and how to rebuild it.
    """
    summarize_store(path)


def check_errors(errors: str) -> None:
    """Validate the ``errors=`` argument."""
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r}; expected one of {ERRORS}")


def store_paths(root, animals: Iterable[str] | str | None = None, *, errors: str = "raise",
                processes: int | None = None, executor: Executor | None = None,
                progress: bool | None = None, rebuild: bool = False) -> dict[str, Path]:
    """Ingest (when needed) and return ``{animal: store path}`` for a root.

    ``progress`` shows one bar over the whole ingest: files read, stores
    assembled and written (default: on a terminal and in Jupyter); ``rebuild=True`` re-reads the unit files even when
    a store of them exists. A store built earlier with ``errors="warn"`` that
    skipped files raises (naming them) when opened with ``errors="raise"``;
    with ``errors="warn"`` the skip was warned when it happened.

    Every open warns, once, about files that are read differently from what
    their names promise: ``*.h5`` files that are not unit files by name
    (``Old_Units*.h5``; never read) and unit files whose ``spike_ids`` fit
    neither trial naming rule (numeric order kept). A usable store is opened
    once for all of it.
    """
    check_errors(errors)
    root = resolve_root(root)
    chosen = select_animals(find_animals(root, errors), animals)
    check_cache_writable(cache_dir() / "stores")
    found = {animal: find_unit_files(root, animal) for animal in chosen}
    paths = {animal: store_path(root, animal, files) for animal, files in found.items()}
    summaries = {animal: _usable(path, animal, rebuild) for animal, path in paths.items()}
    todo = {animal: found[animal] for animal, summary in summaries.items() if summary is None}
    total = sum(len(files) + 2 for files in todo.values())
    with progress_bar(total, "ingest", progress if todo else False) as bar:
        paths.update(_ingest(root, todo, errors=errors, processes=processes, executor=executor, bar=bar))
    summaries.update({animal: summarize_store(paths[animal]) for animal in todo})
    for animal, summary in summaries.items():
        if summary.skipped and errors == "raise":
            raise UnitFileError(f"unreadable unit file(s) in {animal}: {'; '.join(r for _, r in summary.skipped)} "
                                "(open with errors='warn' to skip them)")
    _warn_unusual(root, summaries)
    return paths


def _warn_unusual(root: Path, summaries: dict[str, Summary]) -> None:
    others = find_other_files(root, summaries)
    if others:
        warn_user(f"{len(others)} .h5 file(s) are not unit files by name and were not read: {', '.join(others)}")
    bad = [(animal, stem, groups) for animal, summary in summaries.items() for stem, groups in summary.odd_rules]
    if bad:
        listing = "; ".join(f"{root / animal / stem}.h5: {groups}" for animal, stem, groups in bad)
        warn_user(f"spike_ids of some stimulus groups fit neither trial naming rule (numeric, MATLAB string "
                  f"order); their trials are in numeric order, which may not be presentation order: {listing}")


def read_skipped(path: Path) -> list[tuple[str, str]]:
    """The (file, reason) pairs a store recorded as skipped."""
    tables = load_tables(path, prefixes=("skipped_",))
    return list(zip(tables["skipped_file"].values.tolist(), tables["skipped_reason"].values.tolist()))


#: The store's dimensions, named by its variables' prefixes.
TABLE_DIMS = {"row_": "row", "unit_": "unit", "group_": "group", "skipped_": "skipped"}


@dataclass(frozen=True)
class Coded:
    """A string column as it is stored: ``codes`` into its distinct values ``labels`` (fixed-width unicode).

    Examples
    --------
    >>> Coded(np.array([1, 0, 1]), np.array(["song", "call"])).decode().tolist()
    ['call', 'song', 'call']
    """

    codes: np.ndarray
    labels: np.ndarray

    def decode(self) -> np.ndarray:
        """The strings, fixed-width unicode."""
        return self.labels[self.codes]


def read_columns(path: Path, names: Iterable[str]) -> dict[str, np.ndarray | Coded]:
    """The columns ``names`` of a store (those it has), read in one open.

    Numbers come as arrays, string columns as :class:`Coded` (their codes
    and distinct values, as stored): grouping by them costs nothing more.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> path = store_paths(sample_corpus(), "LblBlu2028M")["LblBlu2028M"]  # doctest: +SKIP
    >>> read_columns(path, ["group_stim_type"])["group_stim_type"].labels  # doctest: +SKIP
    array(['song', 'call', 'mlnoise'], dtype='<U7')
    """
    try:
        with h5py.File(path, "r") as f:
            return _read_columns(f, names)
    except OSError as exc:
        raise StoreError(f"{path}: unreadable ({exc}); rebuild the store with open_aa4(..., rebuild=True) or "
                         "`aa4xr cache clear`") from exc


def _read_columns(f: h5py.File, names: Iterable[str]) -> dict[str, np.ndarray | Coded]:
    out: dict[str, np.ndarray | Coded] = {}
    for name in names:
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            continue
        labels = dset.attrs.get(LABELS_ATTR)
        if labels is not None:
            out[name] = Coded(dset[()], _strings(f[labels.decode() if isinstance(labels, bytes) else labels]))
        else:
            out[name] = _strings(dset) if h5py.check_string_dtype(dset.dtype) else dset[()]
    return out


def load_tables(path: Path, prefixes: tuple[str, ...] = tuple(TABLE_DIMS),
                names: Iterable[str] | None = None) -> xr.Dataset:
    """Everything of a store but ``spike_time`` (or only ``names``), loaded in memory.

    Read with h5py directly (a store is netCDF-4, i.e. HDF5): an order of
    magnitude faster than decoding ~50 small variables through netCDF4.
    Strings come as fixed-width unicode arrays.
    """
    names = set(names) if names is not None else None
    try:
        return _load_tables(path, prefixes, names)
    except OSError as exc:
        raise StoreError(f"{path}: unreadable ({exc}); rebuild the store with open_aa4(..., rebuild=True) or "
                         "`aa4xr cache clear`") from exc


def _load_tables(path: Path, prefixes: tuple[str, ...], names: set | None) -> xr.Dataset:
    out = {}
    with h5py.File(path, "r") as f:
        for name in (f if names is None else [n for n in names if n in f]):
            prefix = next((p for p in prefixes if name.startswith(p)), None)
            dset = f[name]
            if prefix is None or not isinstance(dset, h5py.Dataset):
                continue
            values = _read_columns(f, [name])[name]
            attrs = {k: v for k, v in dset.attrs.items() if k != LABELS_ATTR
                     and not k.startswith(("_", "DIMENSION", "CLASS", "NAME", "REFERENCE"))}  # netCDF internals
            out[name] = xr.Variable(TABLE_DIMS[prefix], values.decode() if isinstance(values, Coded) else values,
                                    attrs)
        attrs = {k: v for k, v in f.attrs.items() if not k.startswith("_")}
    return xr.Dataset(out, attrs=attrs)


def _strings(dset: h5py.Dataset) -> np.ndarray:
    """A string variable as fixed-width unicode: cast in one numpy call when ASCII, decoded per value otherwise.

    HDF5 strings hold no NUL, so the cast through fixed-width bytes loses nothing.
    """
    fixed = np.asarray(dset[()], dtype="S")
    try:
        return fixed.astype(str)
    except UnicodeDecodeError:
        return dset.asstr()[()].astype(str)


#: This process's open stores: ``{file_identity(path): (pid, file, its spike_time)}``.
_OPEN: dict[tuple, tuple[int, h5py.File, h5py.Dataset]] = {}
_OPEN_LOCK = threading.Lock()


def file_identity(path: str | os.PathLike) -> tuple:
    """``(path, device, inode, size, mtime_ns)``: a file rewritten or replaced at the same path is another one."""
    stat = os.stat(path)
    return str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def spike_time_of(identity: tuple) -> h5py.Dataset:
    """The ``spike_time`` of the store :func:`file_identity` names, from a file kept open by this process.

    Opening an HDF5 file costs about a millisecond, more than reading one
    stimulus's spans: a process reading many (one task per chunk, one
    item per stimulus) opens each store once. The handle is kept by the
    file's identity, not its path: a store rebuilt at the same path (written
    under another name and renamed over it) is another file, opened anew,
    and the old one's handle is let go, never read again. Handles are per
    process: a forked child (a DataLoader or multiprocessing worker) opens
    its own, and lets go of those it inherited. All are closed at exit.
    """
    with _OPEN_LOCK:
        found = _OPEN.get(identity)
        if found is None or found[0] != os.getpid():
            for old in [k for k, (pid, _, _) in _OPEN.items() if pid != os.getpid() or k[0] == identity[0]]:
                del _OPEN[old]  # inherited through fork, or an older file at this path
            try:
                f = h5py.File(identity[0], "r")
                found = _OPEN[identity] = (os.getpid(), f, f["spike_time"])
            except (OSError, KeyError) as exc:
                raise StoreError(f"{identity[0]}: unreadable ({exc}); rebuild the store with "
                                 "open_aa4(..., rebuild=True) or `aa4xr cache clear`") from exc
    return found[2]


@atexit.register
def close_stores() -> None:
    """Close the stores this process keeps open (see :func:`spike_time_of`)."""
    with _OPEN_LOCK:
        for pid, f, _ in _OPEN.values():
            if pid == os.getpid():
                f.close()
        _OPEN.clear()


def read_spikes(path: str, start: int, stop: int) -> np.ndarray:
    """``spike_time[start:stop]`` of a store, read through its open handle (see :func:`spike_time_of`)."""
    dset = spike_time_of(file_identity(path))
    try:
        return dset[start:stop]
    except OSError as exc:
        raise StoreError(f"{path}: spike_time[{start}:{stop}] unreadable ({exc}); rebuild the store with "
                         "open_aa4(..., rebuild=True) or `aa4xr cache clear`") from exc


def open_spike_times(root=None, *, animals=None, errors: str = "raise", processes: int | None = None,
                     executor: Executor | None = None, progress: bool | None = None) -> xr.Dataset:
    """The exact spike times of a root, as one CF ragged-array Dataset.

    Dims ``spike`` (``spike_time``, lazy) and ``row`` (one per trial, with
    ``row_size``, ``neuron``, ``stim`` (md5), ``protocol``, ``trial_name``,
    ``trial`` (presentation order within the pair) and the per-trial rates and
    spans). ``row_start`` is each row's offset into ``spike``.

    Examples
    --------
    >>> st = open_spike_times()  # the built-in sample
    >>> int(st.row_size.sum()) == st.sizes["spike"]
    True
    """
    paths = store_paths(root, animals, errors=errors, processes=processes, executor=executor, progress=progress)
    parts = []
    for animal, path in paths.items():
        tables = load_tables(path)
        neuron = np.array([f"{animal}/{s}" for s in tables["unit_stem"].values], dtype=object)
        g = tables["row_group"].values
        parts.append(xr.Dataset(
            {
                "row_size": tables["row_size"],
                **{k: tables[f"row_{k}"] for k in TRIAL_ATTRS},
            },
            coords={
                "neuron": ("row", neuron[tables["row_unit"].values]),
                "stim": ("row", tables["group_stim_md5"].values[g].astype(object)),
                "protocol": ("row", tables["group_protocol"].values[g].astype(object)),
                "trial_name": ("row", tables["row_trial_name"].values),
                "trial": ("row", tables["row_trial"].values),
            },
        ))
    rows = xr.concat(parts, dim="row") if parts else xr.Dataset()
    import dask.array as da

    spikes = [xr.open_dataset(p, engine="h5netcdf", chunks={"spike": 2**22})["spike_time"].data
              for p in paths.values()]
    spike_time = da.concatenate(spikes) if spikes else da.zeros(0)
    rows["spike_time"] = xr.Variable("spike", spike_time, {"units": "s", "long_name": "spike time from stimulus onset"})
    rows["row_size"].attrs = {"sample_dimension": "spike", "long_name": "spikes in this trial"}
    rows["row_start"] = ("row", np.concatenate([[0], np.cumsum(rows["row_size"].values)[:-1]]).astype("i8"))
    rows.attrs = {"Conventions": "CF-1.8", "animals": list(paths)}
    return rows


def pair_position(md5: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of equal (md5, unit).

    Rows are stored pair by pair in presentation order, so this is each
    trial's presentation order within its (stimulus, unit) pair.

    Examples
    --------
    >>> pair_position(np.array(["a", "a", "b", "b", "b"]), np.array([0, 0, 0, 0, 1]))
    array([0, 1, 0, 1, 0], dtype=int32)
    """
    if md5.size == 0:
        return np.zeros(0, "i4")
    new_pair = np.ones(md5.size, bool)
    new_pair[1:] = (md5[1:] != md5[:-1]) | (unit[1:] != unit[:-1])
    starts = np.flatnonzero(new_pair)
    return (np.arange(md5.size) - np.repeat(starts, np.diff(np.append(starts, md5.size)))).astype("i4")


def trial_spike_times(spikes: xr.Dataset, stim: str, neuron: str) -> list[np.ndarray]:
    """Spike times of each trial of one (stimulus, neuron) pair, in presentation order.

    Parameters
    ----------
    spikes : xarray.Dataset
        From :func:`open_spike_times`.
    stim, neuron : str
        An md5 and a ``"<animal>/<stem>"`` label.

    Examples
    --------
    >>> st = open_spike_times()
    >>> trains = trial_spike_times(st, str(st.stim[0].values), str(st.neuron[0].values))
    """
    rows = np.flatnonzero((spikes["stim"].values == stim) & (spikes["neuron"].values == neuron))
    rows = rows[np.argsort(spikes["trial"].values[rows], kind="stable")]
    starts, sizes = spikes["row_start"].values[rows], spikes["row_size"].values[rows]
    if rows.size == 0:
        return []
    block = spikes["spike_time"][starts.min(): (starts + sizes).max()].values
    return [block[s - starts.min(): s - starts.min() + n] for s, n in zip(starts, sizes)]
