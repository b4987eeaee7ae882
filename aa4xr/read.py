"""Read one AA4 unit file: its trials' spike times (flat) and its metadata.

HDF5's per-object cost dominates (an AA4 unit file holds ~1,400 trial groups),
so trial groups and ``spike_times`` datasets are read with h5py's low-level
API; the few root and stimulus-group attributes go through the high-level one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .layout import SORT_TYPES, decode_attr, parse_unit_name

#: Top-level groups that summarise protocols; they hold no stimuli.
SUMMARY_GROUPS = frozenset({"class_info", "extra_info"})
#: Root attributes without which a unit cannot be placed.
REQUIRED_UNIT_ATTRS = ("electrode", "sortType")
#: Stimulus-group attributes without which a response cannot be placed.
REQUIRED_STIM_ATTRS = ("stim_md5", "stim_type", "stim_duration")
#: Per-trial attributes, kept as float64 (NaN when absent).
TRIAL_ATTRS = ("bg_rate", "peri_rate", "pre_time", "post_time")
#: Sentinel that marks a trial without spikes.
SILENT = -999.0


class UnitFileError(ValueError):
    """A unit file that cannot be read as AA4; the message names the file."""


@dataclass
class Unit:
    """Everything one unit file holds.

    Attributes
    ----------
    attrs : dict
        Decoded root attributes plus the parsed name fields and ``sort_type``.
    groups : pandas.DataFrame
        One row per stimulus group: ``protocol``, ``number`` and every
        attribute of the group, decoded.
    trials : pandas.DataFrame
        One row per trial: ``group`` (row of ``groups``), ``trial_name``
        (the numeric group name), ``count`` and :data:`TRIAL_ATTRS`.
        Ordered by group, then numeric trial name.
    spike_times : numpy.ndarray
        float64 spike times of all trials, concatenated in ``trials`` order.
    """

    attrs: dict
    groups: pd.DataFrame
    trials: pd.DataFrame
    spike_times: np.ndarray


def _numeric_children(group: h5py.Group) -> list[tuple[int, str]]:
    """Members of a group whose names are integers, in numeric order."""
    return sorted((int(name), name) for name in group.keys() if name.isdigit())


def _read_scalar(gid: h5py.h5g.GroupID, name: bytes) -> float:
    """One numeric attribute of a group as float64; NaN when absent."""
    if not h5py.h5a.exists(gid, name):
        return np.nan
    attr = h5py.h5a.open(gid, name)
    buf = np.empty(attr.shape, dtype="f8")
    attr.read(buf)
    return float(buf.reshape(-1)[0]) if buf.size else np.nan


def _read_spike_times(gid: h5py.h5g.GroupID) -> np.ndarray:
    """A trial's ``spike_times`` as a flat float64 array; -999 becomes empty."""
    dset = h5py.h5d.open(gid, b"spike_times")
    buf = np.empty(dset.shape, dtype="f8")
    dset.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
    buf = buf.reshape(-1)
    if buf.size == 1 and buf[0] == SILENT:
        return buf[:0]
    return buf


def _unit_attrs(f: h5py.File, stem: str) -> dict:
    attrs = {key: decode_attr(value) for key, value in f.attrs.items()}
    missing = [key for key in REQUIRED_UNIT_ATTRS if attrs.get(key) is None]
    if missing:
        raise UnitFileError(f"{f.filename}: root attribute(s) {missing} missing; every AA4 unit file has them")
    raw = str(attrs["sortType"])
    if raw not in SORT_TYPES:
        raise UnitFileError(f"{f.filename}: sortType {raw!r} is not one of {sorted(SORT_TYPES)}")
    name = parse_unit_name(stem)
    electrode = float(attrs["electrode"])
    if electrode != name["electrode"]:
        raise UnitFileError(f"{f.filename}: electrode attribute {electrode:g} disagrees with the file name")
    return {
        **attrs,
        **name,
        "site": attrs.get("site") or name["site"],
        "ldepth": float(attrs["ldepth"]) if attrs.get("ldepth") is not None else np.nan,
        "rdepth": float(attrs["rdepth"]) if attrs.get("rdepth") is not None else np.nan,
        "sort_type": SORT_TYPES[raw],
    }


def read_unit(path: str | Path) -> Unit:
    """Read one unit file.

    Parameters
    ----------
    path : str or Path
        An AA4 unit file ``<animal>/<unit>.h5``.

    Returns
    -------
    Unit
        Flat spike times, trial and stimulus-group tables, root attributes.

    Raises
    ------
    UnitFileError
        When the file is not readable HDF5 or lacks a required attribute; the
        message names the file (and group) and what was expected.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> unit = read_unit(next(sample_corpus().glob("*/*.h5")))
    >>> unit.trials["count"].sum() == unit.spike_times.size
    True
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UnitFileError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        with f:
            return _read_open_unit(f, path)
    except (OSError, KeyError, RuntimeError) as exc:
        raise UnitFileError(f"{path}: unreadable AA4 unit file ({exc})") from exc


def _read_open_unit(f: h5py.File, path: Path) -> Unit:
    try:
        attrs = _unit_attrs(f, path.stem)
    except ValueError as exc:
        raise UnitFileError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    groups, trial_cols, spikes = [], {k: [] for k in ("group", "trial_name", "count", *TRIAL_ATTRS)}, []
    protocols = sorted(name for name, obj in f.items() if name not in SUMMARY_GROUPS and isinstance(obj, h5py.Group))
    for protocol in protocols:
        for number, name in _numeric_children(f[protocol]):
            stim = f[protocol][name]
            gattrs = {key: decode_attr(value) for key, value in stim.attrs.items()}
            missing = [key for key in REQUIRED_STIM_ATTRS if gattrs.get(key) is None]
            if missing:
                raise UnitFileError(f"{path}: group /{protocol}/{name} lacks attribute(s) {missing}")
            gidx = len(groups)
            groups.append({"protocol": protocol, "number": number, **gattrs})
            for trial_name, tname in _numeric_children(stim):
                gid = h5py.h5g.open(stim.id, tname.encode())
                times = _read_spike_times(gid)
                spikes.append(times)
                trial_cols["group"].append(gidx)
                trial_cols["trial_name"].append(trial_name)
                trial_cols["count"].append(times.size)
                for key in TRIAL_ATTRS:
                    trial_cols[key].append(_read_scalar(gid, key.encode()))
    trials = pd.DataFrame(trial_cols).astype({"group": "i4", "trial_name": "i4", "count": "i8"})
    spike_times = np.concatenate(spikes) if spikes else np.empty(0)
    return Unit(attrs=attrs, groups=pd.DataFrame(groups), trials=trials, spike_times=spike_times)
