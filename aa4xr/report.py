"""What a root holds, and what an open leaves out and why (``aa4xr info``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ._validate import check_choices
from .checks import check
from .dataset import SORT_TYPES, open_aa4
from .layout import find_other_files, resolve_root
from .store import read_skipped, store_paths


def summarize(root=None, *, sort_types=("single", "multi"), processes: int | None = None,
              progress: bool | None = None) -> dict:
    """A summary of a root: animals, units, stimuli, coverage, trials, and omissions.

    Unreadable unit files are skipped (and listed), so a summary is always
    possible. Sort types not in ``sort_types`` are counted as left out.

    Examples
    --------
    >>> s = summarize()  # the built-in sample
    >>> sorted(s)[:3]
    ['animals', 'coverage', 'left_out']
    """
    root = resolve_root(root)
    sort_types = check_choices(sort_types, "sort_types", SORT_TYPES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = store_paths(root, errors="warn", processes=processes, progress=progress)
        everything = open_aa4(root, sort_types=None, errors="warn", processes=processes)
    kept = np.isin(everything["sort_type"].values, list(sort_types)) if sort_types else np.ones(everything.sizes["neuron"], bool)
    ds = everything.isel(neuron=kept)
    n_trials = ds["n_trials"].values
    heard = n_trials > 0
    units = everything["neuron"].to_index().to_frame(index=False).assign(
        animal=everything["animal"].values, sort_type=everything["sort_type"].values)
    per_animal = units.groupby("animal").size().to_dict()
    by_sort = units.groupby("sort_type").size().to_dict()
    stims = pd.Series(ds["stim_type"].values).value_counts().sort_index().to_dict()
    skipped = [(f, r) for p in paths.values() for f, r in read_skipped(p)]
    per_pair = n_trials[heard]
    return {
        "root": str(root),
        "animals": per_animal,
        "units": {"by_sort_type": by_sort, "kept": int(kept.sum()), "sort_types_kept": list(sort_types or [])},
        "stimuli": {"total": int(ds.sizes["stim"]), "by_type": stims},
        "coverage": {
            "pairs_heard": int(heard.sum()),
            "pairs_possible": int(heard.size),
            "fraction": float(heard.mean()) if heard.size else float("nan"),
        },
        "trials": {
            "total": int(per_pair.sum()),
            "per_pair_min": int(per_pair.min()) if per_pair.size else 0,
            "per_pair_max": int(per_pair.max(initial=0)),
            "per_pair_median": float(np.median(per_pair)) if per_pair.size else float("nan"),
        },
        "left_out": {
            "units_by_sort_type": {k: v for k, v in by_sort.items() if sort_types and k not in sort_types},
            "unreadable_files": skipped,
            "stimuli_only_heard_by_left_out_units": int((~heard.any(axis=1)).sum()),
            "wav_missing": [str(m) for m in everything.stim.values[everything["wav_status"].values == "missing"]],
            "wav_md5_mismatch": [f"{m}: {p}" for m, p in zip(
                everything.stim.values[everything["wav_status"].values == "md5_mismatch"],
                everything["wav_path"].values[everything["wav_status"].values == "md5_mismatch"])],
            "wav_unreadable": [f"{m}: {p}" for m, p in zip(
                everything.stim.values[everything["wav_status"].values == "unreadable"],
                everything["wav_path"].values[everything["wav_status"].values == "unreadable"])],
            "not_unit_files": find_other_files(root, paths),
        },
        "read_differently": _read_differently(check(root, processes=processes)),
    }


def _read_differently(findings: pd.DataFrame) -> dict[str, list[str]]:
    """What ``aa4xr check`` found that changes how data are read, listed by what it concerns."""
    def details(mask) -> list[str]:
        return [d for detail in findings.loc[mask, "detail"] for d in detail.split("; ") if d]

    finding = findings["finding"]
    return {
        "trial_order_disagreements": details(finding.str.startswith("spike_ids fit neither")),
        "duration_disagreements": details(finding.str.contains("disagree on stim_duration")),
        "unknown_attributes": sorted(set(finding[finding.str.startswith("undocumented attribute")]
                                         .str.replace("undocumented attribute ", "").str.replace(" (kept)", ""))),
        "direct_reader_fallbacks": [f"{f}: {n} file(s)" for f, n in findings.loc[
            finding.str.contains("fallback:"), ["finding", "files"]].itertuples(index=False)],
    }


def format_summary(summary: dict) -> str:
    """Human-readable text of :func:`summarize`'s result."""
    lines = [f"AA4 root: {summary['root']}"]
    lines.append("animals: " + ", ".join(f"{a} ({n} units)" for a, n in summary["animals"].items()))
    units = summary["units"]
    lines.append("units by sort type: " + ", ".join(f"{k} {v}" for k, v in units["by_sort_type"].items())
                 + f"; kept {units['kept']} ({', '.join(units['sort_types_kept']) or 'all'})")
    stims = summary["stimuli"]
    lines.append(f"stimuli: {stims['total']} (" + ", ".join(f"{k} {v}" for k, v in stims["by_type"].items()) + ")")
    cov = summary["coverage"]
    lines.append(f"coverage: {cov['pairs_heard']} of {cov['pairs_possible']} (stim, neuron) pairs heard "
                 f"({cov['fraction']:.1%})")
    tr = summary["trials"]
    lines.append(f"trials: {tr['total']} (per pair min {tr['per_pair_min']}, median {tr['per_pair_median']:g}, "
                 f"max {tr['per_pair_max']})")
    left = summary["left_out"]
    lines.append("left out:")
    dropped = left["units_by_sort_type"]
    lines.append("  units of sort types not kept: "
                 + (", ".join(f"{k} {v}" for k, v in dropped.items()) if dropped else "none"))
    lines.append(f"  unreadable unit files: {len(left['unreadable_files']) or 'none'}")
    lines += [f"    {r}" for _, r in left["unreadable_files"]]  # the reason names the file
    for key, label in (("stimuli_only_heard_by_left_out_units", "stimuli heard only by left-out units"),
                       ("wav_missing", "stimuli without a sound file"),
                       ("wav_md5_mismatch", "sound files whose md5 differs from stim_md5"),
                       ("wav_unreadable", "sound files that cannot be read (spectrogram NaN)"),
                       ("not_unit_files", ".h5 files that are not unit files by name (not read)")):
        if key in left:
            value = left[key]
            lines.append(f"  {label}: {value if not isinstance(value, list) else len(value) or 'none'}")
            if isinstance(value, list):
                lines += [f"    {v}" for v in value]
    lines.append("read differently (see `aa4xr check`):")
    for key, label in (("trial_order_disagreements", "groups whose spike_ids fit neither trial naming rule "
                        "(numeric order kept)"),
                       ("duration_disagreements", "stimuli whose groups disagree on stim_duration (median used)"),
                       ("unknown_attributes", "undocumented attributes (kept in the store)"),
                       ("direct_reader_fallbacks", "files the direct HDF5 reader handed to h5py")):
        value = summary["read_differently"][key]
        lines.append(f"  {label}: {len(value) or 'none'}")
        lines += [f"    {v}" for v in value]
    return "\n".join(lines)
