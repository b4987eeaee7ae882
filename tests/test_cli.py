"""The aa4xr command, run as a user runs it: in a subprocess, against the sample and a corpus
with an unreadable unit file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aa4xr
import aa4xr._cache
from aa4xr.cli import main, parser
from aa4xr.plot import FIGURE_NAMES


def run(*args: str, cache: Path | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    """``python -m aa4xr ARGS`` with the session's cache (or ``cache``) and no CRCNS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRCNS_")}
    if cache is not None:
        env["AA4XR_CACHE_DIR"] = str(cache)
    done = subprocess.run([sys.executable, "-m", "aa4xr", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
    return done


@pytest.fixture(scope="module")
def corrupt(corpus, tmp_path_factory):
    """A copy of the sample corpus whose first unit file is not HDF5 at all."""
    root = tmp_path_factory.mktemp("corrupt") / "root"
    shutil.copytree(corpus.root, root)
    bad = root / f"{corpus.units['neuron'].iloc[0]}.h5"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    return root, bad


# -- the command itself ------------------------------------------------------------------------


def test_version_and_python_m():
    assert run("--version").stdout.strip() == f"aa4xr {aa4xr.__version__}"
    console = shutil.which("aa4xr", path=str(Path(sys.executable).parent))
    assert console and subprocess.run([console, "--version"], capture_output=True, text=True,
                                      check=True).stdout.strip() == f"aa4xr {aa4xr.__version__}"
    assert "info" in run("--help").stdout
    assert "invalid choice" in run("nope", expect=2).stderr


@pytest.mark.parametrize("command", [["info", "--sort-types"], ["inspect", "--animals"], ["fetch", "--animals"]])
def test_multi_value_options_are_spelled_alike(command):
    dest = command[1].lstrip("-").replace("-", "_")
    spaced = getattr(parser().parse_args([*command, "a", "b", "c"]), dest)
    commas = getattr(parser().parse_args([*command, "a,b", "c"]), dest)
    assert spaced == commas == ["a", "b", "c"]


# -- info ----------------------------------------------------------------------------------------


def test_info_reports_what_is_left_out(corpus, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(corpus.root, root)
    bad = root / f"{corpus.units['neuron'].iloc[0]}.h5"
    bad.write_bytes(b"not HDF5")
    written = corpus.stim_files[corpus.stim_files["wav_written"]]
    written = written[~written["md5"].duplicated(keep=False)]  # a sound no other animal holds
    wav = root / written.iloc[0]["animal"] / "wavfiles" / f"stim{written.iloc[0]['number']}.wav"
    wav.write_bytes(wav.read_bytes() + b"\0\0")  # its md5 no longer matches stim_md5
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    for animal in corpus.units["animal"].unique():
        assert animal in out
    assert bad.name in out and "unreadable unit files: 1" in out
    bad_neuron = f"{bad.parent.name}/{bad.stem}"
    dropped = corpus.units[~corpus.units["sort_type"].isin(["single", "multi"])]
    dropped = dropped[dropped["neuron"] != bad_neuron]
    for sort_type, n in dropped.groupby("sort_type").size().items():
        assert f"{sort_type} {n}" in out
    kept = corpus.units["sort_type"].isin(["single", "multi"]) & (corpus.units["neuron"] != bad_neuron)
    assert f"kept {kept.sum()}" in out
    assert "sound files whose md5 differs from stim_md5: 1" in out and wav.name in out
    missing = corpus.stims[corpus.stims["wav_missing_everywhere"]]["md5"]
    assert f"stimuli without a sound file: {len(missing)}" in out and all(m in out for m in missing)


def test_info_sort_types_and_all_units(corpus):
    units = corpus.units
    default = run("info", corpus.root).stdout
    assert f"kept {units['sort_type'].isin(['single', 'multi']).sum()}" in default
    assert run("info", corpus.root, "--sort-types", "single", "multi").stdout == default
    single = run("info", corpus.root, "--sort-types", "single").stdout
    assert f"kept {(units['sort_type'] == 'single').sum()} (single)" in single
    assert f"kept {len(units)} (all)" in run("info", corpus.root, "--all-units").stdout


def test_info_errors_name_the_problem(tmp_path):
    assert "nope" in run("info", tmp_path / "nope", expect=2).stderr
    assert "bogus" in run("info", "--sort-types", "single,bogus", expect=2).stderr


# -- inspect -------------------------------------------------------------------------------------


def figures(done: subprocess.CompletedProcess, out: Path) -> list[Path]:
    printed = [Path(line) for line in done.stdout.splitlines()]
    assert [p.name for p in printed] == list(FIGURE_NAMES)
    assert all(p.parent == out and p.read_bytes()[:4] == b"\x89PNG" for p in printed)
    return printed


def test_inspect_writes_the_three_figures_and_its_options_choose_what_they_show(corpus, tmp_path):
    default = figures(run("inspect", corpus.root, "--out", tmp_path / "a"), tmp_path / "a")
    animal = sorted(corpus.units["animal"].unique())[-1]
    pairs = corpus.pairs[corpus.pairs["neuron"].str.startswith(f"{animal}/")]
    neuron, stim = pairs.iloc[0]["neuron"], pairs.iloc[0]["md5"]
    chosen = figures(run("inspect", corpus.root, "--out", tmp_path / "b", "--animals", animal, "--neuron", neuron,
                         "--stim", stim, "--dt", "0.01"), tmp_path / "b")
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(default, chosen))


def test_inspect_options_are_checked(corpus, tmp_path):
    animals = sorted(corpus.units["animal"].unique())
    other = corpus.units[corpus.units["animal"] == animals[0]]["neuron"].iloc[0]
    err = run("inspect", corpus.root, "--out", tmp_path, "--animals", animals[-1], "--neuron", other, expect=2).stderr
    assert f"neuron {other!r} is not in the Dataset" in err
    assert "stim 'nope'" in run("inspect", corpus.root, "--out", tmp_path, "--stim", "nope", expect=2).stderr
    assert "Zebra" in run("inspect", corpus.root, "--out", tmp_path, "--animals", "Zebra", expect=2).stderr
    assert "dt=0.0" in run("inspect", corpus.root, "--out", tmp_path, "--dt", "0", expect=2).stderr
    assert "invalid choice" in run("inspect", "--errors", "ignore", expect=2).stderr
    assert "nope" in run("inspect", tmp_path / "nope", expect=2).stderr
    assert not list(tmp_path.glob("*.png"))


def test_inspect_an_unreadable_file_stops_or_is_skipped_with_errors_warn(corrupt, tmp_path):
    root, bad = corrupt
    err = run("inspect", root, "--out", tmp_path, expect=2).stderr
    assert bad.name in err and "--errors warn" in err
    done = run("inspect", root, "--out", tmp_path, "--errors", "warn")
    figures(done, tmp_path)
    assert bad.name in done.stderr and "skipping unreadable unit file" in done.stderr


# -- sample and fetch ----------------------------------------------------------------------------


def test_sample_writes_into_a_new_or_empty_folder_and_reuses_a_written_one(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "new", empty):
        assert run("sample", target).stdout.strip() == str(target)
        animals = sorted(p.parent.name for p in target.glob("*/*.h5"))
        assert len(set(animals)) == 3 and len(animals) >= 10
    before = {p: p.stat().st_mtime_ns for p in empty.rglob("*")}
    run("sample", empty)
    assert {p: p.stat().st_mtime_ns for p in empty.rglob("*")} == before


def test_fetch_checks_animals_and_credentials_before_any_download(tmp_path):
    err = run("fetch", "--animals", "LblBlu2028M,Zebra01", "--path", tmp_path, expect=2).stderr
    assert "Zebra01" in err and "LblBlu2028M" in err
    err = run("fetch", "--animals", "LblBlu2028M", "--path", tmp_path, expect=2).stderr
    assert "CRCNS_USERNAME" in err
    assert not list(tmp_path.iterdir())


# -- cache ---------------------------------------------------------------------------------------


def counts(info: str) -> dict[str, int]:
    """Items per kind in the output of ``aa4xr cache info``."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+) (?:files|folders)", info, re.M)}


def test_cache_info_clear_and_prune(corpus, tmp_path):
    cache, root = tmp_path / "cache", tmp_path / "root"
    shutil.copytree(corpus.root, root)
    animals = sorted(corpus.units["animal"].unique())
    info = run("cache", "info", cache=cache).stdout
    assert f"cache: {cache}" in info and counts(info) == {"stores": 0, "spectrograms": 0, "md5": 0, "sample": 0}
    run("inspect", root, "--out", tmp_path / "figs", cache=cache)  # fills stores, spectrograms, md5s
    stores = sorted((cache / "stores").glob("*.nc"))
    assert sorted(p.name.split("-")[0] for p in stores) == animals
    n_spectrograms = len(list((cache / "spectrograms").glob("*.npy")))
    assert n_spectrograms > 0
    info = run("cache", "info", cache=cache).stdout
    assert counts(info) == {"stores": len(stores), "spectrograms": n_spectrograms,
                            "md5": len(list((cache / "md5").iterdir())), "sample": 0}
    sizes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert info.splitlines()[-1].split()[-2:] == aa4xr._cache.format_size(sizes).split()

    # a changed unit file makes its animal's store stale: prune removes it, keeps the others
    changed = root / f"{corpus.units[corpus.units['animal'] == animals[0]]['neuron'].iloc[0]}.h5"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    out = run("cache", "prune", root, cache=cache).stdout
    assert [p for p in stores if not p.exists()] == [p for p in stores if p.name.startswith(animals[0])]
    assert f"removed {stores[0]}" in out and "freed" in out
    # spectrograms are kept while the remaining stores still list their stimuli
    kept_stims = set(corpus.pairs[corpus.pairs["neuron"].str.split("/").str[0].isin(animals[1:])]["md5"])
    left = {p.name.split("-")[0] for p in (cache / "spectrograms").glob("*.npy")}
    assert left and left <= kept_stims

    # clear ROOT removes that root's current stores only; clear removes everything
    run("info", root, cache=cache)  # rebuilds the stale store
    other = tmp_path / "other"
    run("sample", other, cache=cache)
    run("info", other, cache=cache)
    n_before = len(list((cache / "stores").glob("*.nc")))
    run("cache", "clear", root, cache=cache)
    assert len(list((cache / "stores").glob("*.nc"))) == n_before - len(animals)
    out = run("cache", "clear", cache=cache).stdout
    assert "freed" in out and not [p for p in cache.rglob("*") if p.is_file()]
    assert "at most one ROOT" in run("cache", "clear", root, other, cache=cache, expect=2).stderr
    assert "invalid choice" in run("cache", "wipe", cache=cache, expect=2).stderr


def test_import_is_light():
    """``import aa4xr`` loads no heavy dependency (the time is in benchmarks/import_time.py)."""
    code = ("import sys, aa4xr; heavy = ['scipy', 'dask', 'h5py', 'matplotlib', 'torch', 'netCDF4', 'requests']; "
            "print([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves_and_accessor_methods_spell_out_their_signatures():
    import inspect

    from aa4xr import accessor, analysis
    from aa4xr.read import UnitFileError

    assert "plot" in aa4xr.__all__ and "UnitFileError" in aa4xr.__all__ and "split_stimuli" in aa4xr.__all__
    assert all(getattr(aa4xr, name) is not None for name in aa4xr.__all__)
    assert set(aa4xr.__all__) <= set(dir(aa4xr))
    assert aa4xr.UnitFileError is UnitFileError and aa4xr.plot.__name__ == "aa4xr.plot"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aa4xr.nope  # noqa: B018
    methods = [m for m in vars(accessor.AA4Accessor) if not m.startswith("_")]
    assert set(methods) == {"psth", "mask", "coverage", "drop_empty", "trial_rates", "to_frame",
                            "response_strength", "reliability"}
    for name in methods:
        method = list(inspect.signature(getattr(accessor.AA4Accessor, name)).parameters.values())[1:]
        function = list(inspect.signature(getattr(analysis, name)).parameters.values())[1:]
        assert method == function, name
        assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in method)
