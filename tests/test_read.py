"""read_unit against the ground truth: both writers' files, every trial by presentation, both readers."""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from aa4xr.hdf5 import READERS
from aa4xr.read import UnitFileError, read_unit, string_order, trial_rule
from aa4xr.synthetic import write_corpus


@pytest.fixture(params=READERS)
def reader(request):
    return request.param


def _by_presentation(unit) -> pd.DataFrame:
    """The reader's trials with their group's protocol and number, and spike slices."""
    starts = np.concatenate([[0], np.cumsum(unit.trials["count"])])
    return unit.trials.assign(protocol=unit.groups["protocol"].values[unit.trials["group"]],
                              number=unit.groups["number"].values[unit.trials["group"]],
                              start=starts[:-1], presentation=unit.trials["presentation"] + 1)


def assert_equals_truth(truth, neuron, unit):
    """Every trial: same group name, same presentation, same spikes and attributes."""
    got = _by_presentation(unit)
    expected = truth.trials[truth.trials["neuron"] == neuron]
    merged = got.reset_index().merge(expected.reset_index(), on=["protocol", "number", "presentation"],
                                     suffixes=("", "_gt"), validate="1:1", how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) == len(expected)
    np.testing.assert_array_equal(merged["trial_name"], merged["trial_name_gt"])
    np.testing.assert_array_equal(merged["count"], merged["count_gt"])
    for name in ("bg_rate", "peri_rate", "pre_time", "post_time"):
        np.testing.assert_allclose(merged[name], merged[f"{name}_gt"], rtol=1e-12)
    for row in merged.itertuples():
        np.testing.assert_array_equal(unit.spike_times[row.start:row.start + row.count],
                                      truth.trial_spikes(row.index_gt))
    # within a group, the reader's rows are in presentation order
    assert (got.groupby("group")["presentation"].diff().dropna() == 1).all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The sample preset, written once for this module."""
    return write_corpus(tmp_path_factory.mktemp("read"), "sample", seed=0, processes=1)


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """23 trials per stimulus group: renamed groups where string and numeric order differ most."""
    return write_corpus(tmp_path_factory.mktemp("read23"), "sample", seed=3, processes=1,
                        animals=("LblBlu2028M",), units_per_animal=6, stims_per_animal=4, trials=(23, 23))


def test_both_writers_equal_ground_truth(corpus, reader):
    units = corpus.units
    assert units["matlab_style"].any() and (~units["matlab_style"] & units["renamed"]).any() \
        and (~units["renamed"]).any()
    assert set(corpus.trials.groupby(["neuron", "protocol", "number"]).size()) == {9, 10, 11}
    for row in units.itertuples():
        unit = read_unit(corpus.root / row.animal / row.file, reader=reader)
        assert_equals_truth(corpus, row.neuron, unit)
        assert unit.attrs["sort_type"] == row.sort_type and unit.attrs["electrode"] == row.electrode
        assert unit.features.writer() == ("MATLAB" if row.matlab_style else "h5py")
        assert unit.trial_rule == ("string" if row.renamed else "numeric"), row.file
        assert unit.disagreements == []


def test_23_trials(long_corpus, reader):
    assert set(long_corpus.trials.groupby(["neuron", "protocol", "number"]).size()) == {23}
    assert long_corpus.units["renamed"].any() and (~long_corpus.units["renamed"]).any()
    for row in long_corpus.units.itertuples():
        unit = read_unit(long_corpus.root / row.animal / row.file, reader=reader)
        assert_equals_truth(long_corpus, row.neuron, unit)
        assert unit.trial_rule == ("string" if row.renamed else "numeric")


def _scramble_ids(path, rng):
    """Give one 10+-trial stimulus group spike ids that fit neither naming rule."""
    with h5py.File(path, "r+") as f:
        for protocol in f:
            if protocol in ("class_info", "extra_info"):
                continue
            for number, group in f[protocol].items():
                spiking = [t for t in group.values() if t["spike_ids"].size > 1]
                if len(group) >= 10 and len(spiking) >= 10:
                    firsts = rng.permutation(len(spiking))
                    while trial_rule(np.arange(1, len(spiking) + 1), firsts.astype(float))[0] != "none":
                        firsts = rng.permutation(len(spiking))
                    for trial, first in zip(spiking, firsts):
                        ids = trial["spike_ids"]
                        ids[...] = (first * 10_000 + np.arange(ids.size)).reshape(ids.shape)
                    return f"/{protocol}/{number}"
    raise AssertionError("no group to scramble")


def test_ids_that_fit_neither_rule_warn_and_keep_numeric_order(corpus, tmp_path, reader):
    for renamed in (True, False):
        row = corpus.units[corpus.units["renamed"] == renamed].iloc[0]
        path = tmp_path / f"{renamed}" / row["file"]
        path.parent.mkdir()
        shutil.copy(corpus.root / row["animal"] / row["file"], path)
        where = _scramble_ids(path, np.random.default_rng(1))
        with pytest.warns(UserWarning, match=rf"{row['file']}.*neither.*{where}"):
            unit = read_unit(path, reader=reader)
        assert unit.disagreements == [where]
        got = _by_presentation(unit)
        protocol, number = where.split("/")[1:]
        group = got[(got["protocol"] == protocol) & (got["number"] == int(number))]
        assert len(group) >= 10
        np.testing.assert_array_equal(group["trial_name"], np.arange(1, len(group) + 1))  # numeric order kept
        assert unit.groups.set_index(["protocol", "number"]).loc[(protocol, int(number)), "trial_rule"] == "numeric"


def test_string_order_and_rule():
    assert string_order(10).tolist() == [0, 9, 1, 2, 3, 4, 5, 6, 7, 8]
    # names in string order: "1", "10".."19", "2", "20".."23", "3"...
    assert string_order(23)[[1, 10, 11, 12, 16]].tolist() == [9, 18, 1, 19, 2]
    names = np.arange(1, 11)
    held = string_order(10)
    ids = np.empty(10)
    ids[np.argsort(held)] = np.arange(10) * 100.0  # renamed: group k holds presentation held[k-1]
    assert trial_rule(names, ids[np.arange(10)]) == ("decided", {"string"})
    silent = np.full(10, np.nan)
    silent[0] = 5.0
    assert trial_rule(names, silent) == ("open", {"numeric", "string"})
    assert trial_rule(np.arange(1, 10), np.arange(9.0)) == ("same", {"numeric"})
    assert trial_rule(np.arange(1, 10), np.arange(9.0)[::-1]) == ("none", set())


def test_missing_spike_times_names_the_group(corpus, tmp_path, reader):
    unit = corpus.units.iloc[0]
    path = tmp_path / unit["file"]
    shutil.copy(corpus.root / unit["animal"] / unit["file"], path)
    with h5py.File(path, "r+") as f:
        protocol = next(k for k in f if k not in ("class_info", "extra_info"))
        stim = next(iter(f[protocol]))
        trial = next(iter(f[protocol][stim]))
        del f[protocol][stim][trial]["spike_times"]
    with pytest.raises(UnitFileError, match=rf"{unit['file']}.*/{protocol}/{stim}/{trial}"):
        read_unit(path, reader=reader)


def _first(f):
    """Paths of the first protocol, stimulus and trial groups of an open unit file."""
    protocol = next(k for k in f if k.startswith("Call"))
    stim = sorted(f[protocol], key=int)[0]
    trial = sorted(f[protocol][stim], key=int)[0]
    return f"/{protocol}", f"/{protocol}/{stim}", f"/{protocol}/{stim}/{trial}"


def _replace(f, path, data):
    attrs = dict(f[path].attrs)
    del f[path]
    f[path] = data
    f[path].attrs.update(attrs)


def _spikes(value):
    def damage(f):
        trial = _first(f)[2]
        _replace(f, f"{trial}/spike_times", value)
        _replace(f, f"{trial}/spike_ids", np.arange(np.size(value), dtype="f8").reshape(np.shape(value)))
        return f"{trial}/spike_times"
    return damage


def _rename(level, new):
    def damage(f):
        old = _first(f)[level]
        f.move(old, f"{old.rsplit('/', 1)[0]}/{new}")
        return f"{old.rsplit('/', 1)[0]}"
    return damage


def _empty_stim(f):
    stim = _first(f)[1]
    for trial in list(f[stim]):
        del f[stim][trial]
    return stim


def _stim_dataset(f):
    stim = _first(f)[1]
    del f[stim]
    f[stim] = np.arange(3.0)
    return _first(f)[0]


def _duration(value):
    def damage(f):
        stim = _first(f)[1]
        f[stim].attrs["stim_duration"] = value
        return f"{stim}.*stim_duration"
    return damage


FAULTS = {
    "nan spike": (_spikes(np.array([0.1, np.nan, 0.3])), "NaN or infinite"),
    "inf spike": (_spikes(np.array([0.1, np.inf])), "NaN or infinite"),
    "-inf spike": (_spikes(np.array([-np.inf, 0.2])), "NaN or infinite"),
    "2-D spikes": (_spikes(np.arange(6.0).reshape(2, 3) / 10), r"shape \(2, 3\)"),
    "integer spikes": (_spikes(np.array([12, 40, 95])), "integer values"),
    "trial named 3a": (_rename(2, "3a"), r"\['3a'\] are not integers"),
    "stimulus named stim4": (_rename(1, "stim4"), r"\['stim4'\] are not integers"),
    "stimulus without trials": (_empty_stim, "no trial groups"),
    "stimulus as a dataset": (_stim_dataset, "not groups"),
    "negative duration": (_duration(-1.0), "positive"),
    "nan duration": (_duration(np.nan), "positive"),
    "text duration": (_duration("abc"), "positive"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_faults_name_the_file_and_group(corpus, tmp_path, reader, fault):
    """Each fault: a UnitFileError naming the file and the group, never a silent misread."""
    damage, what = FAULTS[fault]
    row = corpus.units.iloc[1]
    path = tmp_path / row["file"]
    shutil.copy(corpus.root / row["animal"] / row["file"], path)
    with h5py.File(path, "r+") as f:
        where = damage(f)
    with pytest.raises(UnitFileError, match=rf"{path}: {where}.*{what}|{path}: {where}: .*{what}"):
        read_unit(path, reader=reader)


def test_broken_link_and_faulty_file_are_skipped_with_errors_warn(corpus, tmp_path, fresh_cache):
    import warnings

    from aa4xr import store

    animal = corpus.units["animal"].iloc[0]
    root = tmp_path / "root"
    shutil.copytree(corpus.root / animal, root / animal)
    units = sorted((root / animal).glob("Site*.h5"))
    units[0].unlink()
    units[0].symlink_to(tmp_path / "gone.h5")
    with h5py.File(units[1], "r+") as f:
        where = _empty_stim(f)
    with pytest.raises(UnitFileError, match=units[0].name):
        store.store_paths(root, processes=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = store.store_paths(root, errors="warn", processes=1)[animal]
    said = " ".join(str(w.message) for w in caught)
    assert f"{units[0]}: no such file" in said and f"{units[1]}: {where}: holds no trial groups" in said
    kept = set(store.load_tables(path)["unit_stem"].values)
    assert kept == {u.stem for u in units[2:]}


def test_corrupt_file_is_an_error_not_handed_to_libhdf5(corpus, tmp_path, monkeypatch):
    """A direct-reader bounds failure names the file; libhdf5 (which can hang on such files) is not tried."""
    from aa4xr import read

    row = corpus.units.iloc[0]
    path = tmp_path / row["file"]
    data = (corpus.root / row["animal"] / row["file"]).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    monkeypatch.setattr(read, "open_h5py", lambda p: pytest.fail("a corrupt file went to libhdf5"))
    with pytest.raises(UnitFileError, match=rf"{path}: not a readable HDF5 unit file: corrupt"):
        read_unit(path, reader="direct")
