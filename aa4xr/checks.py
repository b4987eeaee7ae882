"""``aa4xr check``: what a real root holds and how aa4xr reads it.

:func:`check` returns one row per finding, a tidy table a user can paste into
a bug report; :func:`format_check` prints it grouped by topic. It reads what a
cold open reads (the unit files, into the spike-time store, and the sounds'
md5s), nothing more, so on a root opened before it costs seconds.

Topics: ``files`` (unit files, files that are not unit files by name,
unreadable files), ``writer`` (h5py-like or MATLAB-like), ``hdf5`` (reader,
superblock, string encodings, dataset shapes), ``trial order`` (the naming
rule each file follows, and groups whose ``spike_ids`` fit neither rule),
``attributes`` (any the format does not document), ``sounds`` (md5 matches
and mismatches), ``durations`` (stimuli whose groups disagree on
``stim_duration``). A row is a ``problem`` when something would be read
wrong or not at all.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ._cache import cache_dir
from .layout import find_other_files, resolve_root
from .store import duration_disagreements, load_tables, read_skipped, store_paths

COLUMNS = ["topic", "finding", "files", "problem", "animal", "detail"]
#: Sound statuses that mean a stimulus's sound would be wrong (see aa4xr.stimuli).
BAD_SOUNDS = ("md5_mismatch", "unreadable")


def _counts(cell: str) -> dict[str, int]:
    """``"a=1;b=2"`` -> ``{"a": 1, "b": 2}``."""
    return {k: int(v) for k, v in (item.rsplit("=", 1) for item in cell.split(";") if item)}


def _unit_findings(animal: str, root: Path, tables) -> list[dict]:
    stems = tables["unit_stem"].values.astype(str)
    files = [str(root / animal / f"{s}.h5") for s in stems]
    column = lambda name: tables[f"unit_{name}"].values.astype(str)  # noqa: E731
    rows = [{"topic": "files", "finding": "unit files read", "files": len(stems), "problem": False}]
    for writer, n in Counter(column("writer")).items():
        rows.append({"topic": "writer", "finding": f"{writer or 'unknown'}-like", "files": n, "problem": False})
    readers = Counter(r if not f else f"{r} (fallback: {f})" for r, f in zip(column("reader"), column("fallback")))
    rows += [{"topic": "hdf5", "finding": f"read by {r}", "files": n, "problem": False} for r, n in readers.items()]
    rows += [{"topic": "hdf5", "finding": f"superblock v{v}", "files": n, "problem": False}
             for v, n in Counter(tables["unit_superblock"].values.astype(int)).items()]
    for name, label in (("strings", "strings"), ("shapes", "datasets")):
        met = Counter(kind for cell in column(name) for kind in _counts(cell))
        rows += [{"topic": "hdf5", "finding": f"{label}: {kind}", "files": n, "problem": False}
                 for kind, n in sorted(met.items())]
    names = {"numeric": "trial groups named in presentation order",
             "string": "trial groups renamed in MATLAB's string order"}
    rows += [{"topic": "trial order", "finding": names.get(rule, f"trial naming: {rule}"), "files": n,
              "problem": False}
             for rule, n in Counter(column("trial_rule")).items()]
    bad = [(f, groups) for f, groups in zip(files, column("rule_disagreements")) if groups]
    if bad:
        rows.append({"topic": "trial order", "finding": "spike_ids fit neither naming rule (numeric order kept)",
                     "files": len(bad), "problem": True, "detail": "; ".join(f"{f}: {g}" for f, g in bad)})
    unknown: dict[str, list[str]] = {}
    for f, cell in zip(files, column("unknown_attrs")):
        for name in filter(None, cell.split(";")):
            unknown.setdefault(name, []).append(f)
    rows += [{"topic": "attributes", "finding": f"undocumented attribute {name} (kept)", "files": len(where),
              "problem": False, "detail": "; ".join(where)} for name, where in sorted(unknown.items())]
    return [{**row, "animal": animal} for row in rows]


def _sound_findings(root: Path, paths: dict) -> list[dict]:
    from .dataset import _collect
    from .stimuli import locate_sounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stims, _, _, sources = _collect(root, paths, None, None)
        sounds = locate_sounds(sources, stims.set_index("md5")["duration"], cache_dir=cache_dir() / "md5")
    rows = []
    for status, group in sounds.groupby("status"):
        rows.append({"topic": "sounds", "finding": f"stimuli with sound status {status}", "files": len(group),
                     "problem": status in BAD_SOUNDS, "animal": "",
                     "detail": "" if status == "ok" else "; ".join(
                         f"{md5}: {path or 'no file'}" for md5, path in zip(group.index, group["path"]))})
    return rows


def _duration_findings(root: Path, paths: dict) -> list[dict]:
    tables = []
    for animal, path in paths.items():
        t = load_tables(path, names=("group_stim_md5", "group_stim_duration", "group_unit", "group_protocol",
                                     "group_number", "unit_stem"))
        stems = t["unit_stem"].values.astype(str)[t["group_unit"].values.astype(int)]
        tables.append(pd.DataFrame({
            "md5": t["group_stim_md5"].values.astype(str), "duration": t["group_stim_duration"].values,
            "where": [f"{animal}/{s}.h5:/{p}/{n}" for s, p, n in
                      zip(stems, t["group_protocol"].values.astype(str), t["group_number"].values)]}))
    bad = duration_disagreements(pd.concat(tables, ignore_index=True))
    if bad.empty:
        return [{"topic": "durations", "finding": "stimuli whose groups agree on stim_duration", "files": 0,
                 "problem": False, "animal": "", "detail": ""}]
    return [{"topic": "durations", "finding": "stimuli whose groups disagree on stim_duration (median used)",
             "files": len(bad), "problem": True, "animal": "",
             "detail": "; ".join(f"{r.md5}: {r.groups}" for r in bad.itertuples())}]


def check(root=None, *, processes: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """What a root holds and how aa4xr reads it: one row per finding.

    Parameters
    ----------
    root : path, optional
        An AA4 root (default: the built-in sample).
    processes, progress
        As for :func:`aa4xr.open_aa4`'s ingest.

    Returns
    -------
    pandas.DataFrame
        Columns ``topic``, ``finding``, ``files`` (how many files or stimuli),
        ``problem`` (something would be read wrong or not at all),
        ``animal`` ("" for corpus-wide findings) and ``detail`` (the files,
        groups or stimuli concerned).

    Examples
    --------
    >>> table = check()  # the built-in sample
    >>> sorted(set(table["topic"]))
    ['durations', 'files', 'hdf5', 'sounds', 'trial order', 'writer']
    >>> bool(table["problem"].any())
    False
    """
    root = resolve_root(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = store_paths(root, errors="warn", processes=processes, progress=progress)
    rows = []
    for animal, path in paths.items():
        tables = load_tables(path, prefixes=("unit_",))
        rows += _unit_findings(animal, root, tables)
        others = find_other_files(root, [animal])
        if others:
            rows.append({"topic": "files", "finding": ".h5 files that are not unit files by name (not read)",
                         "files": len(others), "problem": False, "animal": animal, "detail": "; ".join(others)})
        skipped = read_skipped(path)
        if skipped:
            rows.append({"topic": "files", "finding": "unreadable unit files (left out)", "files": len(skipped),
                         "problem": True, "animal": animal, "detail": "; ".join(r for _, r in skipped)})
    rows += _sound_findings(root, paths) + _duration_findings(root, paths)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["detail"] = table["detail"].fillna("")
    return table


def compare_readers(path: str) -> str:
    """How the direct reader's :func:`~aa4xr.read.read_unit` of one file compares with h5py's.

    Returns ``"identical"``, ``"fallback: <reason>"`` (the direct reader handed
    the file to h5py), ``"unreadable: <reason>"`` (both refuse it) or
    ``"differs: <what>"``.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> compare_readers(sorted(sample_corpus().glob("*/Site*.h5"))[0])
    'identical'
    """
    from .read import UnitFileError, read_unit

    got = {}
    for reader in ("direct", "h5py"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got[reader] = read_unit(path, reader=reader)
        except UnitFileError as exc:
            got[reader] = str(exc)
    direct, h5py = got["direct"], got["h5py"]
    if isinstance(direct, str) or isinstance(h5py, str):
        if isinstance(direct, str) and isinstance(h5py, str):
            return f"unreadable: {h5py}"
        return f"differs: only the {'h5py' if isinstance(direct, str) else 'direct'} reader reads it"
    if direct.features.reader == "h5py":
        return f"fallback: {direct.features.fallback}"
    checks = {
        "spike times": lambda: np.array_equal(direct.spike_times, h5py.spike_times),
        "trials": lambda: direct.trials.equals(h5py.trials),
        "stimulus groups": lambda: direct.groups.equals(h5py.groups),
        "root attributes": lambda: direct.attrs.keys() == h5py.attrs.keys() and all(
            a == b or a != a and b != b for a, b in zip(direct.attrs.values(), h5py.attrs.values())),
        "trial order": lambda: (direct.trial_rule, direct.disagreements) == (h5py.trial_rule, h5py.disagreements),
    }
    bad = [what for what, same in checks.items() if not same()]
    return f"differs: {', '.join(bad)}" if bad else "identical"


def verify_readers(root=None, *, processes: int | None = None) -> pd.DataFrame:
    """Compare the direct reader with h5py on every unit file of a root (``aa4xr check --verify``).

    One row per file: ``animal``, ``path``, ``outcome`` (see :func:`compare_readers`),
    ``problem`` (``outcome`` starts with "differs").
    """
    from concurrent.futures import ProcessPoolExecutor

    from .layout import find_animals, find_unit_files

    root = resolve_root(root)
    files = pd.concat([find_unit_files(root, a) for a in find_animals(root)], ignore_index=True)
    with ProcessPoolExecutor(processes) as pool:
        outcomes = list(pool.map(compare_readers, files["path"], chunksize=4))
    table = files[["animal", "path"]].assign(outcome=outcomes)
    return table.assign(problem=table["outcome"].str.startswith("differs"))


def format_check(table: pd.DataFrame) -> str:
    """The text ``aa4xr check`` prints: findings by topic, summed over animals; problems first marked ``!``."""
    lines = []
    for topic, group in table.groupby("topic", sort=False):
        lines.append(f"{topic}:")
        for (finding, problem), rows in group.groupby(["finding", "problem"], sort=False):
            animals = ", ".join(a for a in rows["animal"] if a)
            lines.append(f"  {'!' if problem else ' '} {finding}: {int(rows['files'].sum())}"
                         + (f" ({animals})" if animals else ""))
            lines += [f"      {d}" for detail in rows["detail"] if detail for d in detail.split("; ")]
    n = int(table["problem"].sum())
    lines.append(f"{n} finding(s) where something would be read wrong or not at all" if n
                 else "nothing would be read wrong")
    return "\n".join(lines)
