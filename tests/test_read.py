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
