"""Read one AA4 unit file: its trials' spike times (flat) and everything else it holds.

A unit file is ``/<protocol>/<stimulus number>/<trial>/{spike_times, spike_ids}``
with attributes at every level (see ``AA4_FORMAT.md``). :func:`read_unit`
walks it through :mod:`aa4xr.hdf5` (the direct reader, or h5py for files it
does not parse) and returns a :class:`Unit`: every trial in presentation
order, every attribute of every level, and how the file was read.

Presentation order is decided from the data (:func:`trial_rule`): MATLAB
rewrote the offline-sort files after listing trial groups in string order,
so group "2" of a 10-trial stimulus holds presentation 10. ``spike_ids``
increase with recording time, so the order of each trial's first id tells
which naming rule a group follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from ._validate import warn_user
from .h5direct import open_direct
from .hdf5 import DATASET, GROUP, Corrupt, Features, Group, Unsupported, open_h5py, reader_choice
from .layout import SORT_TYPES, decode_attr, parse_unit_name

#: Top-level groups that summarise protocols; they hold no stimuli.
SUMMARY_GROUPS = frozenset({"class_info", "extra_info"})
#: Root attributes without which a unit cannot be placed.
REQUIRED_UNIT_ATTRS = ("electrode", "sortType")
#: Stimulus-group attributes without which a response cannot be placed.
REQUIRED_STIM_ATTRS = ("stim_md5", "stim_type", "stim_duration")
#: Per-trial attributes, kept as float64 (NaN when absent).
TRIAL_ATTRS = ("bg_rate", "peri_rate", "pre_time", "post_time")
#: Attributes AA4_FORMAT.md documents; any other is kept and listed by ``aa4xr check``.
KNOWN_ATTRS = {
    "unit": frozenset({"site", "electrode", "ldepth", "rdepth", "sortid", "sortType", "tank_name",
                       "source_directory"}),
    "group": frozenset({"stim_md5", "stim_type", "stim_class", "callid", "stim_duration", "stim_source",
                        "stim_source_sex", "birdid", "callerAge", "callnum", "distance", "original_wavfile",
                        "tdt_wavfile", "zscore", "tstat", "pvalue"}),
    "trial": frozenset(TRIAL_ATTRS),
}
#: The datasets of a trial group.
TRIAL_DATASETS = ("spike_times", "spike_ids")
#: The -999 a trial without spikes stores in ``spike_times`` and ``spike_ids``.
SILENT = -999
#: The spike times of a trial without spikes.
_NO_SPIKES = np.empty(0)
_NO_SPIKES.flags.writeable = False
#: Trial naming rules: group k is presentation k, or MATLAB's string-order renaming.
RULES = ("numeric", "string")


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
        One row per stimulus group: ``protocol``, ``number``, ``trial_rule``
        (the naming rule applied to its trials) and every attribute of the
        group, decoded.
    trials : pandas.DataFrame
        One row per trial, by group then presentation: ``group`` (row of
        ``groups``), ``trial_name`` (its group name, an int), ``presentation``
        (0-based within its group), ``count``, ``first_id``, ``last_id``
        (its first and last ``spike_ids``, NaN when silent), :data:`TRIAL_ATTRS`
        and any other attribute the trial groups hold.
    spike_times : numpy.ndarray
        float64 spike times of all trials, concatenated in ``trials`` order.
    features : Features
        How the file was read and what it met (see :class:`aa4xr.hdf5.Features`).
    trial_rule : str
        The file's naming rule: ``"numeric"``, ``"string"``, ``"mixed"``,
        ``"numeric (assumed)"``/``"string (assumed)"`` when no group could tell,
        or ``"fewer than 10 trials"`` when the rules coincide.
    disagreements : list of str
        Group paths whose ``spike_ids`` agree with neither rule (numeric order kept).
    """

    attrs: dict
    groups: pd.DataFrame
    trials: pd.DataFrame
    spike_times: np.ndarray
    features: Features
    trial_rule: str = ""
    disagreements: list = field(default_factory=list)


def string_order(n: int) -> np.ndarray:
    """Presentation (0-based) held by trial groups 1..n after MATLAB's string-order renaming.

    Examples
    --------
    >>> string_order(11).tolist()   # group "2" holds presentation 10 ("10" sorts after "1")
    [0, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8]
    >>> string_order(3).tolist()
    [0, 1, 2]
    """
    return np.array(sorted(range(1, n + 1), key=str)) - 1


def _fits(presentation: np.ndarray, first_id: np.ndarray) -> bool:
    """Whether first ids (NaN = silent) increase along the given presentation order."""
    previous = -np.inf
    for i in np.argsort(presentation).tolist():
        value = first_id[i]
        if value == value:  # not NaN
            if value <= previous:
                return False
            previous = value
    return True


def trial_rule(names: np.ndarray, first_id: np.ndarray) -> tuple[str, set[str]]:
    """Which naming rules the ids of one stimulus group's trials allow.

    Parameters
    ----------
    names : ndarray of int
        The trial group names, in numeric order.
    first_id : sequence of float
        Each trial's first ``spike_ids`` value, NaN for a silent trial.

    Returns
    -------
    kind : str
        ``"same"`` (fewer than 10 trials, or names not 1..N: only the numeric
        rule exists), ``"decided"`` (exactly one rule fits), ``"open"`` (both
        fit: too few spiking trials to tell) or ``"none"`` (neither fits).
    fitting : set of str
        The rules of :data:`RULES` the ids agree with.

    Examples
    --------
    >>> names = np.arange(1, 11)
    >>> ids = np.array([0, 90, 10, 20, 30, 40, 50, 60, 70, 80.])  # group "2" recorded last
    >>> trial_rule(names, ids)
    ('decided', {'string'})
    >>> trial_rule(names, np.arange(10.))
    ('decided', {'numeric'})
    """
    n = names.size
    numeric = np.arange(n)
    fitting = {"numeric"} if _fits(numeric, first_id) else set()
    if n < 10 or not np.array_equal(names, np.arange(1, n + 1)):
        return ("same" if fitting else "none"), fitting
    if _fits(string_order(n), first_id):
        fitting.add("string")
    return {0: "none", 1: "decided", 2: "open"}[len(fitting)], fitting


def _fail(path: Path, where: str, what: str) -> UnitFileError:
    return UnitFileError(f"{path}: {where}: {what}")


def _integer_members(group: Group, path: Path, what: str) -> list[tuple[int, str]]:
    """The members of a group that must be integer-named groups, in numeric order."""
    members = group.members()
    bad = [name for name in members if not name.isdigit()]
    if bad:
        raise _fail(path, group.path, f"{what} group name(s) {sorted(bad)} are not integers")
    not_groups = [name for name, kind in members.items() if kind != GROUP]
    if not_groups:
        raise _fail(path, group.path, f"member(s) {sorted(not_groups, key=int)} are not groups; "
                    f"expected one group per {what}")
    return sorted((int(name), name) for name in members)


def _at(where: tuple[str, ...], *more: str) -> str:
    """A trial's place (stimulus group path, trial name, then any member) as one HDF5 path.

    Examples
    --------
    >>> _at(("/Call1/abc", "3"), "spike_times")
    '/Call1/abc/3/spike_times'
    """
    return "/".join((*where, *more))


def _trial_array(arrays: dict[str, np.ndarray], name: str, where: tuple[str, str], path: Path) -> np.ndarray | None:
    """A trial dataset as a 1-D array; None when absent. Checks the shapes the writers used.

    ``where`` is the trial's stimulus group path and name.
    """
    data = arrays.get(name)
    if data is None:
        return None
    ndim = data.ndim
    if ndim > 2 or ndim == 2 and min(data.shape) > 1:
        raise _fail(path, _at(where, name), f"shape {data.shape}; expected (n,), (n, 1), (1, n) or a scalar")
    if data.dtype.kind not in "iuf":
        raise _fail(path, _at(where, name), f"type {data.dtype}; expected numbers")
    return data if ndim == 1 else data.reshape(-1)


def _read_trial(where: tuple[str, str], arrays: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, float, float]:
    """One trial (stimulus group path and trial name ``where``, its datasets):
    spike times, first and last spike id (NaN when silent)."""
    times = _trial_array(arrays, "spike_times", where, path)
    if times is None:
        raise _fail(path, _at(where), "no spike_times dataset")
    ids = _trial_array(arrays, "spike_ids", where, path)
    size = times.size
    silent_times = size == 1 and times[0] == SILENT
    if ids is not None and silent_times != (ids.size == 1 and ids[0] == SILENT):
        raise _fail(path, _at(where), "spike_ids and spike_times disagree on the -999 marker of a trial "
                    "without spikes")
    if silent_times or size == 0:
        return _NO_SPIKES, np.nan, np.nan
    if times.dtype.kind != "f":
        raise _fail(path, _at(where, "spike_times"), f"integer values {times[:3].tolist()}...; "
                    "expected float seconds (only a trial without spikes stores the integer -999)")
    if ids is None:
        return times, np.nan, np.nan
    if ids.size != size:
        raise _fail(path, _at(where), f"{size} spike_times but {ids.size} spike_ids")
    return times, float(ids[0]), float(ids[-1])


def _unit_attrs(root: Group, path: Path) -> dict:
    attrs = {key: decode_attr(value) for key, value in root.attrs().items()}
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


def _group_attrs(stim: Group, path: Path) -> dict:
    attrs = {key: decode_attr(value) for key, value in stim.attrs().items()}
    missing = [key for key in REQUIRED_STIM_ATTRS if attrs.get(key) is None]
    if missing:
        raise _fail(path, stim.path, f"lacks attribute(s) {missing}")
    try:
        duration = float(attrs["stim_duration"])
    except (TypeError, ValueError):
        duration = np.nan
    if not (np.isfinite(duration) and duration > 0):
        raise _fail(path, stim.path, f"stim_duration {attrs['stim_duration']!r}; expected a positive number of seconds")
    return {**attrs, "stim_duration": duration}


def _read_tree(root: Group, path: Path) -> Unit:
    attrs = _unit_attrs(root, path)
    groups, kinds, sizes = [], [], []
    where: list[tuple[str, str]] = []  # each trial's stimulus group path and name
    names, times, first, last, tattrs = [], [], [], [], []
    protocols = sorted(name for name, kind in root.members().items() if kind == GROUP and name not in SUMMARY_GROUPS)
    for protocol in protocols:
        pgroup = root.group(protocol)
        for number, name in _integer_members(pgroup, path, "stimulus"):
            stim = pgroup.group(name)
            gattrs = _group_attrs(stim, path)
            children = _integer_members(stim, path, "trial")
            if not children:
                raise _fail(path, stim.path, "holds no trial groups; expected one group per trial")
            members = [child for _, child in children]
            group_first = []
            for child, (_, trial_attrs, arrays) in zip(members, stim.children(members, TRIAL_DATASETS)):
                place = (stim.path, child)
                spikes, first_id, last_id = _read_trial(place, arrays, path)
                where.append(place)
                times.append(spikes)
                group_first.append(first_id)
                last.append(last_id)
                tattrs.append(trial_attrs)
            numbers = np.array([n for n, _ in children])
            kinds.append((stim.path, *trial_rule(numbers, group_first)))
            groups.append({"protocol": protocol, "number": number, **gattrs})
            names.append(numbers)
            first += group_first
            sizes.append(len(children))
    rules, file_rule, disagreements = _decide_rules(kinds, root.features)
    for group, rule in zip(groups, rules):
        group["trial_rule"] = rule
    order = _presentation_order(sizes, rules)
    table = {"group": np.repeat(np.arange(len(sizes), dtype="i4"), sizes),
             "trial_name": np.concatenate(names).astype("i4")[order] if names else np.empty(0, "i4"),
             "presentation": np.concatenate([np.arange(n, dtype="i4") for n in sizes]) if sizes else np.empty(0, "i4"),
             "count": np.array([t.size for t in times], dtype="i8")[order],
             "first_id": np.array(first, dtype="f8")[order],
             "last_id": np.array(last, dtype="f8")[order]}
    ordered = order.tolist()
    flat = [times[i] for i in ordered]
    spike_times = np.concatenate(flat).astype("f8", copy=False) if flat else np.empty(0)
    if not np.isfinite(spike_times).all():
        bad = next(i for i in ordered if not np.isfinite(times[i]).all())
        raise _fail(path, _at(where[bad], "spike_times"), "holds NaN or infinite values; expected finite seconds")
    if disagreements:
        warn_user(f"{path}: spike_ids of {len(disagreements)} stimulus group(s) agree with neither trial "
                  f"naming rule (numeric, MATLAB string order); numeric order kept: {', '.join(disagreements)}")
    return Unit(attrs=attrs, groups=pd.DataFrame(groups), trials=_trial_table(table, tattrs, order, path),
                spike_times=spike_times, features=root.features,
                trial_rule=file_rule, disagreements=disagreements)


def _presentation_order(sizes: list[int], rules: list[str]) -> np.ndarray:
    """Trials (numbered in read order: by group, then trial name) in presentation order.

    Examples
    --------
    >>> _presentation_order([2, 10], ["numeric", "string"]).tolist()
    [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 3]
    """
    if not sizes:
        return np.empty(0, np.intp)
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    return np.concatenate([start + (np.argsort(string_order(n)) if rule == "string" else np.arange(n))
                           for start, n, rule in zip(starts, sizes, rules)])


def _decide_rules(kinds: list[tuple[str, str, set]], features: Features) -> tuple[list[str], str, list[str]]:
    """Each group's rule and the file's: groups the ids cannot decide follow the
    rule the file's other groups confirm, else the writer's (MATLAB: string order)."""
    confirmed = {rule for _, kind, fitting in kinds if kind == "decided" for rule in fitting}
    if len(confirmed) == 1:
        default, file_rule = next(iter(confirmed)), next(iter(confirmed))
    elif confirmed:
        default, file_rule = "numeric", "mixed"
    elif any(kind == "open" for _, kind, _ in kinds):
        default = "string" if features.writer() == "MATLAB" else "numeric"
        file_rule = f"{default} (assumed)"
    else:  # no group can tell the rules apart: fewer than 10 trials, or ids that fit neither
        default = "numeric"
        file_rule = "fewer than 10 trials" if all(kind == "same" for _, kind, _ in kinds) else "numeric"
    rules, disagreements = [], []
    for where, kind, fitting in kinds:
        if kind == "decided":
            rules.append(next(iter(fitting)))
        elif kind == "open":
            rules.append(default)
        else:
            rules.append("numeric")
            if kind == "none":
                disagreements.append(where)
    return rules, file_rule, disagreements


def _trial_table(table: dict[str, np.ndarray], attrs: list[dict], order: np.ndarray, path: Path) -> pd.DataFrame:
    """The trials table: the columns of ``table`` (in presentation order), then
    :data:`TRIAL_ATTRS` and any other trial attribute (``attrs``: each trial's,
    in read order), decoded; NaN where a trial lacks one."""
    keys = dict.fromkeys(chain.from_iterable(attrs))
    clash = [key for key in keys if key in table]
    if clash:
        raise UnitFileError(f"{path}: trial attribute(s) {clash} have the name of a column read_unit computes")
    columns = dict(table)
    for key in (*TRIAL_ATTRS, *(key for key in keys if key not in TRIAL_ATTRS)):
        if key not in keys:
            columns[key] = np.full(order.size, np.nan)
            continue
        values = [a.get(key, np.nan) for a in attrs]
        if all(isinstance(v, float) for v in values):  # numbers, numpy float64 included
            column = np.array(values, dtype="f8")
        else:
            decoded = pd.Series([v if isinstance(v, float) else decode_attr(v) for v in values])
            column = (pd.to_numeric(decoded, errors="coerce") if key in TRIAL_ATTRS else decoded).to_numpy()
        columns[key] = column[order]
    return pd.DataFrame(columns)


def read_unit(path: str | Path, reader: str | None = None) -> Unit:
    """Read one unit file.

    Parameters
    ----------
    path : str or Path
        An AA4 unit file ``<animal>/<unit>.h5``.
    reader : {"direct", "h5py"}, optional
        Default ``$AA4XR_READER`` or ``"direct"``; a file the direct reader
        does not parse is read with h5py (``unit.features.fallback`` says why).

    Returns
    -------
    Unit
        Flat spike times in presentation order, trial and stimulus-group
        tables, root attributes, and how the file was read.

    Raises
    ------
    UnitFileError
        When the file is not readable HDF5 or breaks the AA4 layout; the
        message names the file (and group) and what was expected.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> unit = read_unit(next(sample_corpus().glob("*/Site*.h5")))
    >>> bool(unit.trials["count"].sum() == unit.spike_times.size)
    True
    """
    path = Path(path)
    fallback = ""
    try:
        if reader_choice(reader) == "direct":
            try:
                with open_direct(path) as root:
                    return _read_tree(root, path)
            except Corrupt as exc:
                raise UnitFileError(f"{path}: not a readable HDF5 unit file: corrupt ({exc})") from exc
            except Unsupported as exc:
                fallback = str(exc) or type(exc).__name__
        with open_h5py(path) as root:
            root.features.fallback = fallback
            return _read_tree(root, path)
    except UnitFileError:
        raise
    except FileNotFoundError as exc:
        raise UnitFileError(f"{path}: no such file (a broken link?) ({exc})") from exc
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UnitFileError(f"{path}: not a readable HDF5 unit file ({exc})") from exc
