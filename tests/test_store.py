"""The spike-time store and its faults: nothing lost silently, never a dead end.

Each test fails on the store as it was before its fix (see issue 11's list).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import aa4xr
from aa4xr import store
from aa4xr.read import UnitFileError, read_unit

ANIMAL = "LblBlu2028M"


@pytest.fixture
def root(corpus, tmp_path, fresh_cache):
    """A private copy of one animal of the sample corpus, with an empty cache."""
    copy = tmp_path / "root"
    shutil.copytree(corpus.root / ANIMAL, copy / ANIMAL)
    return copy


def _paths(root, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not unit files by name")
        return store.store_paths(root, processes=1, **kwargs)


def _assert_store_equals_truth(path, corpus):
    """Every spike of the store, per neuron, equals the ground truth's."""
    tables = store.load_tables(path)
    with h5py.File(path, "r") as f:
        spikes = f["spike_time"][()]
    truth = corpus.trials[corpus.trials["animal"] == ANIMAL]
    assert spikes.size == truth["count"].sum() == tables["row_size"].values.sum()
    np.testing.assert_array_equal(np.sort(spikes), np.sort(corpus.spike_times[np.concatenate(
        [np.arange(s, s + n) for s, n in zip(truth["start"], truth["count"])])]))


def test_store_keeps_ids_attributes_and_how_each_file_was_read(root, corpus):
    path = _paths(root)[ANIMAL]
    tables = store.load_tables(path)
    truth = corpus.trials[corpus.trials["animal"] == ANIMAL]
    assert tables.sizes["row"] == len(truth)
    assert np.isnan(tables["row_first_id"].values[tables["row_size"].values == 0]).all()
    spiking = tables["row_size"].values > 0
    assert (tables["row_last_id"].values[spiking] - tables["row_first_id"].values[spiking]
            == tables["row_size"].values[spiking] - 1).all()
    units = corpus.units[corpus.units["animal"] == ANIMAL].set_index("stem").loc[tables["unit_stem"].values]
    np.testing.assert_array_equal(tables["unit_writer"].values,
                                  np.where(units["matlab_style"], "MATLAB", "h5py"))
    np.testing.assert_array_equal(tables["unit_trial_rule"].values,
                                  np.where(units["renamed"], "string", "numeric"))
    assert any("/Stims/stim" in t for t in tables["group_tdt_wavfile"].values)
    _assert_store_equals_truth(path, corpus)


def test_unknown_attributes_are_kept_and_listed(root, corpus):
    unit = sorted(root.glob(f"{ANIMAL}/Site*.h5"))[0]
    with h5py.File(unit, "r+") as f:
        f.attrs["amplifier"] = "RZ5"
        protocol = next(k for k in f if k.startswith("Call"))
        group = next(iter(f[protocol].values()))
        group.attrs["loudness_db"] = 70.0
        next(iter(group.values())).attrs["snr"] = 3.5
    path = _paths(root)[ANIMAL]
    tables = store.load_tables(path)
    row = list(tables["unit_stem"].values).index(unit.stem)
    assert tables["unit_unknown_attrs"].values[row] == "group:loudness_db;root:amplifier;trial:snr"
    assert tables["unit_amplifier"].values[row] == "RZ5"
    assert np.nanmax(tables["group_loudness_db"].values) == 70.0
    assert np.nanmax(tables["row_attr_snr"].values) == 3.5


def test_old_units_files_are_never_read_and_warned_on_every_open(root, monkeypatch):
    old = sorted(root.glob(f"{ANIMAL}/Old_Units*.h5"))
    assert old
    read = []
    original = store.read_unit
    monkeypatch.setattr(store, "read_unit", lambda p: read.append(p) or original(p))
    for _ in range(2):
        with pytest.warns(UserWarning, match="not unit files by name") as caught:
            store.store_paths(root, processes=1)
        message = str(next(w.message for w in caught if "not unit files" in str(w.message)))
        assert all(str(p) in message for p in old)
    assert read and not any("Old_Units" in str(p) for p in read)


def test_format_version_bump_rebuilds(root, monkeypatch):
    path = _paths(root)[ANIMAL]
    with monkeypatch.context() as bumped:
        bumped.setattr(store, "FORMAT_VERSION", store.FORMAT_VERSION + 1)
        assert _paths(root)[ANIMAL] != path  # a new fingerprint: the old store is never opened
    with h5py.File(path, "r+") as f:  # a store of another format at the current name
        f.attrs["aa4xr_format_version"] = 1
    with pytest.warns(UserWarning, match=f"rebuilding.*{path.name}.*format"):
        assert _paths(root)[ANIMAL] == path
    assert h5py.File(path, "r").attrs["aa4xr_format_version"] == store.FORMAT_VERSION


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_truncated_or_zeroed_store_is_rebuilt(root, corpus, damage):
    path = _paths(root)[ANIMAL]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(len(data)))
    with pytest.warns(UserWarning, match=f"rebuilding the spike-time store of {ANIMAL}.*{path.name}"):
        again = _paths(root)[ANIMAL]
    _assert_store_equals_truth(again, corpus)


def _flip_inside(path, name):
    """Flip bytes in the middle of a variable's first HDF5 chunk; return its offset."""
    with h5py.File(path, "r") as f:
        offset = f[name].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        byte = fh.read(1)
        fh.seek(offset + 16)
        fh.write(bytes([byte[0] ^ 0x5A]))
    return offset


def test_corrupt_spike_block_raises_naming_the_store(root):
    path = _paths(root)[ANIMAL]
    _flip_inside(path, "spike_time")
    with pytest.raises(store.StoreError, match=rf"{path.name}.*rebuild"):
        store.read_spikes(str(path), 0, 10)


def test_corrupt_table_block_is_rebuilt(root, corpus):
    path = _paths(root)[ANIMAL]
    _flip_inside(path, "row_size")
    with pytest.warns(UserWarning, match=f"rebuilding.*{path.name}"):
        _paths(root)
    _assert_store_equals_truth(path, corpus)


def test_corrupt_block_elsewhere_names_the_store_and_the_remedy(root, corpus):
    path = _paths(root)[ANIMAL]
    _flip_inside(path, "row_unit")
    with pytest.raises(store.StoreError, match=rf"{path.name}.*rebuild=True"):
        store.load_tables(path)
    _paths(root, rebuild=True)
    store.load_tables(path)
    _assert_store_equals_truth(path, corpus)


def test_rebuild_true_rereads_the_files(root, monkeypatch):
    _paths(root)
    calls = []
    original = store._read_or_error
    monkeypatch.setattr(store, "_read_or_error", lambda p: calls.append(p) or original(p))
    _paths(root)
    assert calls == []
    _paths(root, rebuild=True)
    assert len(calls) == len(list(root.glob(f"{ANIMAL}/Site*.h5")))


def test_cache_that_is_not_a_folder_fails_before_reading(root, tmp_path, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AA4XR_CACHE_DIR", str(blocker))
    monkeypatch.setattr(store, "_read_all", lambda *a, **k: pytest.fail("ingest ran before the cache check"))
    with pytest.raises(store.StoreError, match=rf"{blocker}.*AA4XR_CACHE_DIR"):
        _paths(root)


def test_read_only_cache_fails_before_reading(root, tmp_path):
    """Run where file modes bind (as root too: see test_faults), so the cache is really read-only."""
    from test_faults import _drop_file_capabilities

    cache = tmp_path / "ro"
    (cache / "stores").mkdir(parents=True)
    (cache / "stores").chmod(0o500)
    script = textwrap.dedent(f"""
        from aa4xr import store
        store._read_all = lambda *a, **k: print("ingest ran before the cache check")
        try:
            store.store_paths({str(root)!r}, processes=1)
        except store.StoreError as exc:
            print("StoreError:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "AA4XR_CACHE_DIR": str(cache)},
                          preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None)
    (cache / "stores").chmod(0o755)
    assert done.stdout.startswith("StoreError:"), done.stdout + done.stderr
    assert str(cache / "stores") in done.stdout and "AA4XR_CACHE_DIR" in done.stdout


def test_full_disk_names_the_folder_and_the_space(root, fresh_cache, monkeypatch):
    def no_space(data, path):
        open(path, "wb").close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_write_netcdf", no_space)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(store.StoreError, match=rf"{fresh_cache / 'stores'}.*MB needed.*MB free"):
        _paths(root)
    assert not list((fresh_cache / "stores").glob("*.tmp"))


def test_stale_temporary_stores_are_cleaned(root, fresh_cache):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = fresh_cache / "stores"
    folder.mkdir(parents=True)
    stale = folder / f".{ANIMAL}-0000.nc.{os.uname().nodename}.{dead.pid}.140213.tmp"
    live = folder / f".{ANIMAL}-0000.nc.{os.uname().nodename}.{os.getpid()}.140213.tmp"
    stale.write_bytes(b"half a store")
    live.write_bytes(b"being written")
    _paths(root)
    assert not stale.exists() and live.exists()


def test_store_respects_the_umask(root):
    old = os.umask(0o022)
    try:
        path = _paths(root)[ANIMAL]
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_workers_exit_when_the_parent_dies(root, tmp_path):
    psutil = pytest.importorskip("psutil")
    script = textwrap.dedent(f"""
        import os, time, warnings
        warnings.simplefilter("ignore")
        from aa4xr import store
        def slow(path):
            time.sleep(60)
        store.read_unit = slow
        store.store_paths({str(root)!r}, processes=2)
    """)
    env = {**os.environ, "AA4XR_CACHE_DIR": str(tmp_path / "cache")}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 30
    workers = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = psutil.Process(parent.pid).children()
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, "workers outlived their parent"


def test_skip_warns_once_names_the_file_once_and_strict_open_still_refuses(root):
    unit = sorted(root.glob(f"{ANIMAL}/Site*.h5"))[0]
    unit.write_bytes(b"not hdf5")
    with pytest.raises(UnitFileError, match=unit.name):
        _paths(root)
    with pytest.warns(UserWarning, match="skipping unreadable") as caught:
        _paths(root, errors="warn")
    message = str(next(w.message for w in caught if "skipping" in str(w.message)))
    assert message.count(str(unit)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*not unit files by name")
        store.store_paths(root, errors="warn", processes=1)  # already said: no second warning
    with pytest.raises(UnitFileError, match=unit.name):
        _paths(root)


def test_unlistable_animal_folder_is_an_error_or_a_warning(root, monkeypatch):
    folder = root / ANIMAL
    (root / "GreBlu9508M").mkdir()
    shutil.copy(next(folder.glob("Site*.h5")), root / "GreBlu9508M")
    real = os.listdir

    def listdir(path):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("aa4xr.layout.os.listdir", listdir)
    with pytest.raises(PermissionError, match=rf"{folder}.*errors='warn'"):
        _paths(root)
    with pytest.warns(UserWarning, match=f"{folder}.*left out"):
        paths = _paths(root, errors="warn")
    assert list(paths) == ["GreBlu9508M"]


def test_open_spike_times_equals_ground_truth_after_rebuilds(root, corpus):
    st = aa4xr.open_spike_times(root, processes=1)
    truth = corpus.trials[corpus.trials["animal"] == ANIMAL]
    for row in truth.iloc[::17].itertuples():
        trains = aa4xr.trial_spike_times(st, row.md5, row.neuron)
        np.testing.assert_array_equal(trains[row.order], corpus.trial_spikes(row.Index))


def test_one_progress_bar_covers_the_whole_ingest(root, capsys):
    n_files = len(list(root.glob(f"{ANIMAL}/Site*.h5")))
    _paths(root, progress=True)
    err = capsys.readouterr().err
    assert f"{n_files + 2}/{n_files + 2}" in err and "writing" in err
    _paths(root, progress=True)  # warm: nothing to show
    assert capsys.readouterr().err == ""


def test_progress_bar_in_jupyter_without_ipywidgets(monkeypatch):
    import types

    import tqdm.std

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(store.importlib.util, "find_spec", lambda name: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TqdmWarning: IProgress not found
        bar = store.progress_bar(3, "ingest")
    assert type(bar) is tqdm.std.tqdm and not bar.disable
    bar.close()


def test_one_bad_group_duration_neither_decides_nor_hides(root, corpus):
    """A stimulus's duration comes from all its groups; a disagreeing group is named in a warning."""
    truth = corpus.groups[corpus.groups["animal"] == ANIMAL]
    counts = truth.groupby("md5").size()
    md5 = counts.index[counts >= 3][0]
    group = truth[truth["md5"] == md5].sort_values(["neuron", "protocol"]).iloc[0]
    path = root / f"{group['neuron']}.h5"
    with h5py.File(path, "r+") as f:
        f[f"{group['protocol']}/{group['number']}"].attrs["stim_duration"] = group["stim_duration"] + 0.5
    with pytest.warns(UserWarning, match=rf"{md5}.*{path.name}:/{group['protocol']}/{group['number']}"):
        ds = aa4xr.open_aa4(root, sort_types=None, processes=1)
    expected = corpus.stims.set_index("md5").loc[md5, "duration"]
    assert float(ds.duration.sel(stim=md5)) == pytest.approx(expected)


def test_string_columns_are_stored_as_codes_and_read_back_as_strings(root, corpus):
    path = _paths(root)[ANIMAL]
    with h5py.File(path, "r") as f:
        codes = f["group_stim_md5"]
        assert codes.dtype == np.int32 and codes.fletcher32  # numbers: checksummed, read in one call
        labels = f[codes.attrs[store.LABELS_ATTR]]
        assert labels.shape[0] == len(set(corpus.groups.loc[corpus.groups["animal"] == ANIMAL, "md5"]))
    coded = store.read_columns(path, ["group_stim_md5", "unit_stem", "row_size"])
    assert isinstance(coded["group_stim_md5"], store.Coded) and isinstance(coded["row_size"], np.ndarray)
    tables = store.load_tables(path)
    md5 = tables["group_stim_md5"].values
    assert md5.dtype.kind == "U" and store.LABELS_ATTR not in tables["group_stim_md5"].attrs
    np.testing.assert_array_equal(md5, coded["group_stim_md5"].decode())
    truth = corpus.groups[corpus.groups["animal"] == ANIMAL]
    stems = tables["unit_stem"].values[tables["group_unit"].values.astype(int)]
    assert set(zip(stems, md5)) == set(zip(truth["neuron"].str.split("/").str[1], truth["md5"]))


def _read_in_child(path, start, stop, out):
    out.put((store.read_spikes(path, start, stop), [key for key, (pid, _, _) in store._OPEN.items()
                                                    if pid == os.getpid()]))


def test_spike_handle_is_kept_per_process_and_never_reads_a_replaced_store(root, tmp_path):
    import multiprocessing

    path = str(_paths(root)[ANIMAL])
    with h5py.File(path, "r") as f:
        truth = f["spike_time"][:50]
    np.testing.assert_array_equal(store.read_spikes(path, 0, 50), truth)
    first = store.spike_time_of(store.file_identity(path))
    assert store.spike_time_of(store.file_identity(path)) is first  # opened once for this process

    fork = multiprocessing.get_context("fork")  # a forked child opens its own handle, never the parent's
    out = fork.Queue()
    child = fork.Process(target=_read_in_child, args=(path, 0, 50, out))
    child.start()
    spikes, child_keys = out.get(timeout=60)
    child.join(60)
    np.testing.assert_array_equal(spikes, truth)
    assert child_keys == [store.file_identity(path)]
    np.testing.assert_array_equal(store.read_spikes(path, 0, 50), truth)  # the parent's still reads

    other = tmp_path / "other.nc"  # a store rebuilt at the same path: written elsewhere, renamed over it
    shutil.copy(path, other)
    with h5py.File(other, "r+") as f:
        f["spike_time"][:50] = np.arange(50.0)
    os.replace(other, path)
    np.testing.assert_array_equal(store.read_spikes(path, 0, 50), np.arange(50.0))
    from aa4xr.backend import row_spikes

    np.testing.assert_array_equal(row_spikes(path, np.array([10, 0]), np.array([5, 3])),
                                  np.r_[np.arange(10.0, 15.0), np.arange(3.0)])
    assert [key for key in store._OPEN if key[0] == path] == [store.file_identity(path)]


def test_table_columns_are_stored_as_numbers_or_string_codes_by_their_values():
    """Each kind of column a unit table can hold, with the stored values written out by hand."""
    table = pd.DataFrame({
        "n": [1, 2, 3],
        "s": pd.Series(["b", np.nan, "nan"], dtype="str"),  # missing and literal "nan" are one label
        "nan_s": pd.Series([np.nan] * 3, dtype="str"),  # no value at all: numbers (NaN)
        "mixed": pd.Series(["x", 1.5, None], dtype=object),
        "nums": pd.Series([np.int64(3), 2.5, None], dtype=object),
        "flag": [True, False, True],
    })
    got = store._table_to_vars(table, "t_", "row")
    assert got["t_n"].values.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(got["t_nan_s"].values, [np.nan] * 3)
    np.testing.assert_array_equal(got["t_nums"].values, [3.0, 2.5, np.nan])
    for col, strings in {"s": ["b", "nan", "nan"], "mixed": ["x", "1.5", ""], "flag": ["True", "False", "True"]}.items():
        var = got[f"t_{col}"]
        assert var.values.dtype == np.int32 and var.attrs[store.LABELS_ATTR] == f"labels_t_{col}"
        labels = got[f"labels_t_{col}"].values
        assert labels[var.values].tolist() == strings
        assert labels.tolist() == list(dict.fromkeys(strings))  # in order of first appearance


def test_stacked_tables_keep_the_column_order_of_per_unit_assign():
    tables = [pd.DataFrame({"a": [1], "s": ["x"]}), pd.DataFrame({"b": [2.0], "a": [3]}),
              pd.DataFrame({"unit": ["file's own"], "c": [4]})]
    stacked = store._stack(tables)
    expected = pd.concat([t.assign(unit=i) for i, t in enumerate(tables)], ignore_index=True)
    pd.testing.assert_frame_equal(stacked, expected, check_dtype=False)


def test_spikes_are_copied_in_row_order():
    """Against a plain concatenation indexed spike by spike."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, 40)
    unit = np.sort(rng.integers(0, 4, 40))
    spikes = [rng.random(int(counts[unit == u].sum())) for u in range(5)]  # unit 4 has no rows
    order = rng.permutation(40)
    order[5:15] = np.sort(order[5:15])  # some runs of consecutive rows
    flat = np.concatenate(spikes)
    starts = np.cumsum(counts) - counts
    expected = np.concatenate([flat[s:s + n] for s, n in zip(starts[order], counts[order])])
    np.testing.assert_array_equal(store._sorted_spikes(spikes, unit, counts, order), expected)


def test_store_file_is_what_xarray_writes(root, tmp_path):
    """The direct h5netcdf writer against ``xarray.Dataset.to_netcdf`` with the same checksummed chunks."""
    files = sorted((root / ANIMAL).glob("Site*.h5"))
    units = [read_unit(f) for f in files[:3]]
    for name, skipped in {"none": [], "some": [("/x/a.h5", "unreadable")]}.items():
        data = store._assemble(ANIMAL, [f.stem for f in files[:3]], units, skipped)
        store._write_netcdf(data, tmp_path / f"direct-{name}.nc")
        ds = xr.Dataset({k: xr.Variable(v.dim, v.values, v.attrs) for k, v in data.variables.items()}, attrs=data.attrs)
        encoding = {k: {"fletcher32": True, "chunksizes": (max(1, min(store.CHUNK, v.values.size)),)}
                    for k, v in data.variables.items() if v.values.dtype.kind in "iuf"}
        ds.to_netcdf(tmp_path / f"xarray-{name}.nc", engine="h5netcdf", encoding=encoding)
        with xr.open_dataset(tmp_path / f"direct-{name}.nc", engine="h5netcdf") as direct, \
                xr.open_dataset(tmp_path / f"xarray-{name}.nc", engine="h5netcdf") as expected:
            xr.testing.assert_identical(direct.load(), expected.load())
            for k in expected.variables:
                assert direct[k].dtype == expected[k].dtype, k
                for key in ("dtype", "chunksizes", "fletcher32", "_FillValue"):
                    np.testing.assert_equal(direct[k].encoding.get(key), expected[k].encoding.get(key), err_msg=k)
