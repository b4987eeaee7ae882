"""`aa4xr check` and the new lines of `aa4xr info`, against what the synthetic writer wrote."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from aa4xr.checks import check, format_check
from aa4xr.report import format_summary, summarize
from aa4xr.synthetic import write_corpus


def _files(table, finding_start):
    rows = table[table["finding"].str.startswith(finding_start)]
    return int(rows["files"].sum())


def assert_check_matches_truth(table, truth):
    units = truth.units
    assert not table["problem"].any()
    assert _files(table, "unit files read") == len(units)
    assert _files(table, "MATLAB-like") == units["matlab_style"].sum()
    assert _files(table, "h5py-like") == (~units["matlab_style"]).sum()
    assert _files(table, "trial groups renamed in MATLAB's string order") == units["renamed"].sum()
    assert _files(table, "trial groups named in presentation order") == (~units["renamed"]).sum()
    assert _files(table, ".h5 files that are not unit files") == (units["old_units"] != "").sum()
    assert _files(table, "superblock v0") == len(units)
    assert _files(table, "strings: fixed NULLTERM without NUL") == units["matlab_style"].sum()
    assert _files(table, "strings: vlen") == (~units["matlab_style"]).sum()
    missing = truth.stims["wav_missing_everywhere"].sum()
    assert _files(table, "stimuli with sound status missing") == missing
    assert _files(table, "stimuli with sound status ok") == len(truth.stims) - missing


def test_check_on_the_sample(corpus):
    table = check(corpus.root, processes=1)
    assert list(table.columns) == ["topic", "finding", "files", "problem", "animal", "detail"]
    assert_check_matches_truth(table, corpus)
    text = format_check(table)
    assert "nothing would be read wrong" in text and "Old_Units_" in text


def test_check_names_what_would_be_read_wrong(corpus, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(corpus.root, root)
    units = corpus.units
    renamed = units[units["renamed"]].iloc[0]
    unit = root / renamed["animal"] / renamed["file"]
    with h5py.File(unit, "r+") as f:  # spike_ids of one 10+-trial group in a random order
        group = next(g for p in f if p.startswith("Call") for g in f[p].values()
                     if len(g) >= 10 and all(t["spike_ids"].size > 1 for t in g.values()))
        order = [9, 3, 7, 1, 0, 5, 2, 8, 4, 6] + list(range(10, len(group)))
        for trial, first in zip(group.values(), order):
            ids = trial["spike_ids"]
            ids[...] = (first * 1000 + np.arange(ids.size)).reshape(ids.shape)
        f.attrs["amplifier"] = "RZ5"
        where = group.name
    other = units[~units["renamed"]].iloc[0]
    with h5py.File(root / other["animal"] / other["file"], "r+") as f:
        stim = next(g for p in f if p.startswith("Call") for g in f[p].values())
        stim.attrs["stim_duration"] = float(stim.attrs["stim_duration"]) + 0.5
        md5 = np.asarray(stim.attrs["stim_md5"]).reshape(-1)[0]
        md5 = md5.decode() if isinstance(md5, bytes) else str(md5)
    written = corpus.stim_files[corpus.stim_files["wav_written"]]
    wav = written[written.groupby("md5")["md5"].transform("size") == 1].iloc[0]  # its only copy
    with open(root / wav["animal"] / "wavfiles" / f"stim{wav['number']}.wav", "r+b") as fh:
        fh.seek(-2, 2)
        fh.write(b"\x01\x02")  # same size, other bytes: an md5 mismatch
    table = check(root, processes=1)
    problems = table[table["problem"]]
    assert set(problems["topic"]) == {"trial order", "durations", "sounds"}
    assert f"{unit}: {where}" in problems["detail"].str.cat()
    assert md5 in problems["detail"].str.cat()
    assert "undocumented attribute root:amplifier (kept)" in set(table["finding"])
    run = subprocess.run([sys.executable, "-m", "aa4xr", "check", str(root)], capture_output=True, text=True)
    assert run.returncode == 1 and "spike_ids fit neither" in run.stdout and str(unit) in run.stdout
    info = format_summary(summarize(root, processes=1))
    assert f"{unit}: {where}" in info and "root:amplifier" in info and md5 in info


def test_info_lists_files_that_are_not_units(corpus):
    text = format_summary(summarize(corpus.root, processes=1))
    old = [n for n in corpus.units["old_units"] if n]
    assert f"not unit files by name (not read): {len(old)}" in text
    assert all(name in text for name in old)


@pytest.fixture(scope="module")
def animal_corpus(tmp_path_factory):
    """The one-animal preset (LblBlu2028M: 53 units, 137 stimuli, ~73,000 trials)."""
    return write_corpus(tmp_path_factory.mktemp("animal"), "animal", seed=0)


def test_check_cli_on_the_animal_corpus(animal_corpus):
    run = subprocess.run([sys.executable, "-m", "aa4xr", "check", str(animal_corpus.root), "--table",
                          str(animal_corpus.root.parent / "findings.csv")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "nothing would be read wrong" in run.stdout
    import pandas as pd

    assert_check_matches_truth(pd.read_csv(animal_corpus.root.parent / "findings.csv", keep_default_na=False),
                               animal_corpus)


def test_verify_compares_the_readers_file_by_file(corpus, tmp_path):
    animal = corpus.units["animal"].iloc[0]
    root = tmp_path / "root"
    shutil.copytree(corpus.root / animal, root / animal)
    latest = sorted((root / animal).glob("Site*.h5"))[0]
    old = latest.with_suffix(".orig")
    latest.rename(old)
    with h5py.File(old, "r") as src, h5py.File(latest, "w", libver="latest") as dst:  # v2 headers: fallback
        dst.attrs.update(src.attrs)
        for name in src:
            src.copy(name, dst)
    old.unlink()
    run = subprocess.run([sys.executable, "-m", "aa4xr", "check", str(root), "--verify"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    n_units = (corpus.units["animal"] == animal).sum()
    assert f"identical: {n_units - 1}" in run.stdout and "fallback: 1" in run.stdout
    assert f"{latest}: fallback:" in run.stdout
