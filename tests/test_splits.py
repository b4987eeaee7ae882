"""aa4xr.split_stimuli: disjoint, complete, seeded, stratified splits by md5."""

from __future__ import annotations

import numpy as np
import pytest

import aa4xr


@pytest.fixture(scope="module")
def ds(corpus):
    return aa4xr.open_aa4(corpus.root, spectrogram=False)


def expected_sizes(n: int, fractions) -> list[int]:
    """Cumulative rounding of n stimuli into the fractions, computed independently."""
    edges = [round(sum(fractions[: k + 1]) * n) for k in range(len(fractions))]
    return [b - a for a, b in zip([0] + edges[:-1], edges)]


def test_parts_are_disjoint_complete_and_sized(corpus, ds):
    split = aa4xr.split_stimuli(ds, (0.5, 0.25, 0.25))
    assert list(split) == ["train", "validation", "test"]
    md5s = [m for part in split.values() for m in part]
    assert sorted(md5s) == sorted(corpus.stims["md5"]) and len(set(md5s)) == len(md5s)
    assert [len(p) for p in split.values()] == expected_sizes(len(corpus.stims), (0.5, 0.25, 0.25))
    order = list(ds.stim.values)
    assert all(part == sorted(part, key=order.index) for part in split.values())  # Dataset order
    assert ds.sel(stim=split["train"]).sizes["stim"] == len(split["train"])


@pytest.mark.parametrize("stratify", ["stim_type", "call_type"])
def test_stratified_splits_split_each_stratum(corpus, ds, stratify):
    fractions = (0.6, 0.2, 0.2)
    split = aa4xr.split_stimuli(ds, fractions, stratify=stratify, seed=3)
    truth = corpus.stims.set_index("md5")[stratify].fillna("").astype(str)
    for value, members in truth.groupby(truth).groups.items():
        got = [len(set(members) & set(part)) for part in split.values()]
        assert got == expected_sizes(len(members), fractions), value


def test_seeded_and_independent_of_dataset_order(ds):
    a = aa4xr.split_stimuli(ds, seed=7)
    assert aa4xr.split_stimuli(ds, seed=7) == a
    reordered = aa4xr.split_stimuli(ds.isel(stim=slice(None, None, -1)), seed=7)
    assert {k: sorted(v) for k, v in reordered.items()} == {k: sorted(v) for k, v in a.items()}
    others = [aa4xr.split_stimuli(ds, seed=s)["train"] for s in range(8)]
    assert len({tuple(t) for t in others}) > 1


def test_named_parts_and_bad_arguments(ds):
    split = aa4xr.split_stimuli(ds, {"fit": 0.75, "held_out": 0.25})
    assert list(split) == ["fit", "held_out"]
    assert [len(p) for p in split.values()] == expected_sizes(ds.sizes["stim"], (0.75, 0.25))
    with pytest.raises(ValueError, match="summing to 1"):
        aa4xr.split_stimuli(ds, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="expected 3 values"):
        aa4xr.split_stimuli(ds, (0.5, 0.5))
    with pytest.raises(ValueError, match="stratify='animal'.*stim_type"):
        aa4xr.split_stimuli(ds, stratify="animal")
    with pytest.raises(TypeError, match="Dataset"):
        aa4xr.split_stimuli(ds.spike_count)


def test_empty_parts_are_empty_lists(ds):
    split = aa4xr.split_stimuli(ds, (1.0, 0.0, 0.0))
    assert split["validation"] == split["test"] == [] and len(split["train"]) == ds.sizes["stim"]
    assert np.isin(split["train"], ds.stim.values).all()
