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

from .hdf5 import read_attrs, read_trials
from .layout import SORT_TYPES, decode_attr, parse_unit_name

#: Top-level groups that summarise protocols; they hold no stimuli.
SUMMARY_GROUPS = frozenset({"class_info", "extra_info"})
#: Root attributes without which a unit cannot be placed.
REQUIRED_UNIT_ATTRS = ("electrode", "sortType")
#: Stimulus-group attributes without which a response cannot be placed.
REQUIRED_STIM_ATTRS = ("stim_md5", "stim_type", "stim_duration")
#: Per-trial attributes, kept as float64 (NaN when absent).
TRIAL_ATTRS = ("bg_rate", "peri_rate", "pre_time", "post_time")
TRIAL_KEYS = tuple(k.encode() for k in TRIAL_ATTRS)


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


def _numeric_children(gid: h5py.h5g.GroupID) -> list[tuple[int, bytes]]:
    """Members of a group whose names are integers, in numeric order."""
    return sorted((int(name), name) for name in gid if name.isdigit())


def _read_attrs(oid) -> dict:
    """Every attribute of an HDF5 object, decoded."""
    return {key: decode_attr(value) for key, value in read_attrs(oid).items()}


def _unit_attrs(root: h5py.h5g.GroupID, path: Path) -> dict:
    attrs = _read_attrs(root)
    missing = [key for key in REQUIRED_UNIT_ATTRS if attrs.get(key) is None]
    if missing:
        raise UnitFileError(f"{path}: root attribute(s) {missing} missing; every AA4 unit file has them")
    raw = str(attrs["sortType"])
    if raw not in SORT_TYPES:
        raise UnitFileError(f"{path}: sortType {raw!r} is not one of {sorted(SORT_TYPES)}")
    try:
        name = parse_unit_name(path.stem)
    except ValueError as exc:
        raise UnitFileError(f"{path}: {exc}") from exc
    electrode = float(attrs["electrode"])
    if electrode != name["electrode"]:
        raise UnitFileError(f"{path}: electrode attribute {electrode:g} disagrees with the file name")
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
        fid = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY)
    except OSError as exc:
        raise UnitFileError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        return _read_open_unit(h5py.h5g.open(fid, b"/"), path)
    except (OSError, KeyError, RuntimeError) as exc:
        raise UnitFileError(f"{path}: unreadable AA4 unit file ({exc})") from exc
    finally:
        fid.close()


def _read_open_unit(root: h5py.h5g.GroupID, path: Path) -> Unit:
    attrs = _unit_attrs(root, path)
    groups, trial_cols, spikes = [], {k: [] for k in ("group", "trial_name", "count", *TRIAL_ATTRS)}, []
    protocols = sorted(name for name in root if name.decode() not in SUMMARY_GROUPS
                       and h5py.h5o.get_info(root, name).type == h5py.h5o.TYPE_GROUP)
    for protocol in protocols:
        pgid = h5py.h5g.open(root, protocol)
        for number, name in _numeric_children(pgid):
            stim = h5py.h5g.open(pgid, name)
            gattrs = _read_attrs(stim)
            missing = [key for key in REQUIRED_STIM_ATTRS if gattrs.get(key) is None]
            if missing:
                raise UnitFileError(f"{path}: group /{protocol.decode()}/{number} lacks attribute(s) {missing}")
            gidx = len(groups)
            groups.append({"protocol": protocol.decode(), "number": number, **gattrs})
            children = _numeric_children(stim)
            times, values = read_trials(stim, [name for _, name in children], TRIAL_KEYS)
            spikes += times
            trial_cols["group"] += [gidx] * len(times)
            trial_cols["trial_name"] += [number for number, _ in children]
            trial_cols["count"] += [t.size for t in times]
            for j, key in enumerate(TRIAL_ATTRS):
                trial_cols[key] += values[:, j].tolist()
    trials = pd.DataFrame(trial_cols).astype({"group": "i4", "trial_name": "i4", "count": "i8"})
    spike_times = np.concatenate(spikes) if spikes else np.empty(0)
    return Unit(attrs=attrs, groups=pd.DataFrame(groups), trials=trials, spike_times=spike_times)
