"""read_unit against the ground truth, through libhdf5 (ctypes) and through h5py."""

import numpy as np
import pandas as pd
import pytest

from aa4xr import hdf5
from aa4xr.read import UnitFileError, read_unit


@pytest.fixture(params=["ctypes", "h5py"])
def backend(request, monkeypatch):
    hdf5._library.cache_clear()
    if request.param == "h5py":
        monkeypatch.setenv("AA4XR_NO_CTYPES", "1")
    else:
        monkeypatch.delenv("AA4XR_NO_CTYPES", raising=False)
        assert hdf5._library() is not None, "libhdf5 of h5py not found"
    yield request.param
    hdf5._library.cache_clear()


def test_read_unit_equals_ground_truth(corpus, backend):
    for unit in corpus.units.itertuples():
        got = read_unit(corpus.root / unit.animal / unit.file)
        truth = corpus.trials[corpus.trials["neuron"] == unit.neuron]
        trials = got.trials.assign(protocol=got.groups["protocol"].values[got.trials["group"]],
                                   number=got.groups["number"].values[got.trials["group"]])
        key = ["protocol", "number", "trial_name"]
        merged = trials.reset_index().merge(truth.reset_index(), on=key, suffixes=("", "_gt"), validate="1:1")
        assert len(merged) == len(truth) == len(trials)
        np.testing.assert_array_equal(merged["count"], merged["count_gt"])
        for name in ("bg_rate", "peri_rate", "pre_time", "post_time"):
            np.testing.assert_allclose(merged[name], merged[f"{name}_gt"], rtol=1e-12)
        starts = np.concatenate([[0], np.cumsum(got.trials["count"])])
        for row in merged.itertuples():
            np.testing.assert_array_equal(got.spike_times[starts[row.index]:starts[row.index + 1]],
                                          corpus.trial_spikes(row.index_gt))
        assert got.attrs["sort_type"] == unit.sort_type
        assert got.attrs["electrode"] == unit.electrode


def test_backends_agree(corpus, monkeypatch):
    path = corpus.root / corpus.units["animal"].iloc[0] / corpus.units["file"].iloc[0]
    hdf5._library.cache_clear()
    fast = read_unit(path)
    monkeypatch.setenv("AA4XR_NO_CTYPES", "1")
    hdf5._library.cache_clear()
    slow = read_unit(path)
    hdf5._library.cache_clear()
    pd.testing.assert_frame_equal(fast.trials, slow.trials)
    np.testing.assert_array_equal(fast.spike_times, slow.spike_times)
    pd.testing.assert_frame_equal(fast.groups, slow.groups)
    assert fast.attrs.keys() == slow.attrs.keys()
    for key, value in fast.attrs.items():
        assert value == slow.attrs[key] or (value != value and slow.attrs[key] != slow.attrs[key]), key
        assert type(value) is type(slow.attrs[key]), key


def test_group_attributes_equal_ground_truth(corpus):
    """Every stimulus-group attribute as the writer wrote it (decoded), through libhdf5."""
    for unit in corpus.units.iloc[::4].itertuples():
        got = read_unit(corpus.root / unit.animal / unit.file).groups
        truth = corpus.groups[corpus.groups["neuron"] == unit.neuron]
        merged = got.merge(truth, on=["protocol", "number"], suffixes=("", "_gt"), validate="1:1")
        assert len(merged) == len(truth)
        for name in ("stim_md5", "stim_type", "stim_class", "stim_duration", "zscore", "birdid", "callid"):
            for a, b in zip(merged[name], merged[f"{name}_gt"]):
                missing_a = a is None or (isinstance(a, float) and np.isnan(a))
                missing_b = b is None or b == "None" or (isinstance(b, float) and np.isnan(b))
                assert missing_a == missing_b, (name, a, b)
                assert missing_a or a == b or np.isclose(float(a), float(b)), (name, a, b)


def test_missing_spike_times_names_the_group(corpus, tmp_path, backend):
    import shutil

    import h5py

    unit = corpus.units.iloc[0]
    path = tmp_path / unit["file"]
    shutil.copy(corpus.root / unit["animal"] / unit["file"], path)
    with h5py.File(path, "r+") as f:
        protocol = next(k for k in f if k not in ("class_info", "extra_info"))
        stim = next(iter(f[protocol]))
        trial = next(iter(f[protocol][stim]))
        del f[protocol][stim][trial]["spike_times"]
    with pytest.raises(UnitFileError, match=unit["file"]):
        read_unit(path)
