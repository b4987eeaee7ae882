"""aa4xr.plot: the figures' content against the synthetic writer's ground truth."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import EventCollection, QuadMesh  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import aa4xr  # noqa: E402
from aa4xr import plot  # noqa: E402

DT, PRE, POST = 0.005, 0.2, 0.2


@pytest.fixture(scope="module")
def ds(corpus):
    return aa4xr.open_aa4(corpus.root, dt=DT, pre=PRE, post=POST)


@pytest.fixture(scope="module")
def spikes(corpus):
    return aa4xr.open_spike_times(corpus.root)


def trains(corpus, stim, neuron):
    """Ground-truth spike times of a pair's trials, in presentation order."""
    rows = corpus.trials[(corpus.trials["md5"] == stim) & (corpus.trials["neuron"] == neuron)]
    return [corpus.trial_spikes(i) for i in rows.sort_values("order").index]


def raw_psth(corpus, ds, stim, neuron):
    """Unsmoothed PSTH (spikes/s) of the window's bins: a direct histogram of the ground truth."""
    duration = float(corpus.stims.set_index("md5").loc[stim, "duration"])
    edges = -PRE + np.arange(ds.sizes["time"] + 1) * DT
    t = edges[:-1]
    rows = corpus.trials[(corpus.trials["md5"] == stim) & (corpus.trials["neuron"] == neuron)]
    counts = np.full((len(rows), t.size), np.nan)
    for j, (i, row) in enumerate(rows.iterrows()):
        k = np.searchsorted(edges, corpus.trial_spikes(i), side="right") - 1
        c = np.bincount(k[(k >= 0) & (k < t.size)], minlength=t.size).astype(float)
        valid = (t + DT > -row.pre_time) & (t <= duration + row.post_time)
        counts[j] = np.where(valid, c, np.nan)
    inside = t < duration + POST
    with np.errstate(invalid="ignore"):
        return (np.nansum(counts, 0) / np.isfinite(counts).sum(0) / DT)[inside]


def kept_units(corpus, ds):
    """Ground-truth units of the Dataset's neurons, in Dataset order."""
    return corpus.units.set_index("neuron").loc[list(ds.neuron.values)].reset_index()


def heard_by(corpus, stim):
    return set(corpus.pairs.loc[corpus.pairs["md5"] == stim, "neuron"])


def test_single_cell_layout_labels_and_content(corpus, ds, spikes):
    neuron = str(ds.neuron.values[int((ds.n_trials > 0).sum("stim").argmax("neuron"))])
    stims = plot.default_stims(ds, neuron)
    heard = heard_by(corpus, stims[0])
    assert len(stims) == 3 and all(neuron in heard_by(corpus, s) for s in stims)
    assert sorted(ds.stim_type.sel(stim=stims).values) == ["call", "mlnoise", "song"]
    fig = plot.single_cell(ds, neuron, stims, spikes=spikes, smooth_ms=None)
    assert len(fig.axes) == 12  # 3 x 3 panels, then one colorbar per spectrogram
    grid = np.array(fig.axes[:9]).reshape(3, 3)
    assert all(bar.get_ylabel() == plot.spectrogram_label(ds) for bar in fig.axes[9:])
    assert neuron in fig.get_suptitle()
    assert grid[0, 0].get_ylabel() == "frequency (kHz)"
    assert grid[1, 0].get_ylabel() == "trial"
    assert grid[2, 0].get_ylabel() == "rate (spikes/s)"
    for j, stim in enumerate(stims):
        top, mid, bottom = grid[:, j]
        row = corpus.stims.set_index("md5").loc[stim]
        title = top.get_title()
        assert row["stim_type"] in title and stim[:8] in title and str(row["call_type"]) in title
        assert bottom.get_xlabel() == "time from stimulus onset (s)"
        inside = ds.time.values < row["duration"] + POST
        # spectrogram: (frequency, window bins), frequency axis in kHz
        (mesh,) = [c for c in top.collections if isinstance(c, QuadMesh)]
        image = np.ma.filled(mesh.get_array(), np.nan).reshape(ds.sizes["frequency"], inside.sum())
        np.testing.assert_array_equal(image, ds.spectrogram.sel(stim=stim).values[:, inside])
        assert top.get_ylim()[1] == pytest.approx(ds.frequency.values.max() / 1e3 * 1.02)
        assert top.get_xlim() == pytest.approx((-PRE, ds.time.values[inside][-1] + DT))
        # raster: one tick collection per trial at y = trial, at the exact spike times
        events = [c for c in mid.collections if isinstance(c, EventCollection)]
        truth = trains(corpus, stim, neuron)
        assert len(events) == len(truth) == int(ds.n_trials.sel(stim=stim, neuron=neuron))
        for k, (ev, t) in enumerate(zip(events, truth)):
            np.testing.assert_array_equal(ev.get_positions(), t)
            assert ev.get_lineoffset() == k
        # PSTH: the trial mean of a direct histogram of the same spikes, in spikes/s
        (line,) = [ln for ln in bottom.lines if ln.get_gid() == "psth"]
        np.testing.assert_allclose(line.get_xdata(), ds.time.values[inside] + DT / 2)
        np.testing.assert_allclose(line.get_ydata(), raw_psth(corpus, ds, stim, neuron), rtol=1e-5)


def test_raster_ticks_are_the_exact_spike_times_of_every_pair(corpus, ds, spikes):
    spikes, ax = spikes.copy().load(), None  # in memory: ~100 reads without dask's overhead
    pairs = corpus.pairs[corpus.pairs["neuron"].isin(ds.neuron.values)]
    assert len(pairs) > 50
    for row in pairs.itertuples():
        for artist in ax.collections + ax.patches if ax is not None else []:
            artist.remove()  # reuse the axes (much cheaper than a new one or cla)
        ax = plot.raster(ds, row.md5, row.neuron, spikes=spikes, ax=ax)
        events = [c for c in ax.collections if isinstance(c, EventCollection)]
        truth = trains(corpus, row.md5, row.neuron)
        assert len(events) == len(truth) == row.n_trials
        for ev, t in zip(events, truth):
            np.testing.assert_array_equal(ev.get_positions(), t)
    assert ax.get_ylim() == (row.n_trials - 0.5, -0.5)


def test_population_raster_grey_rows_are_the_unheard_neurons(corpus, ds):
    units = kept_units(corpus, ds)
    seen = []
    for stim in ds.stim.values:
        ax = plot.population_raster(ds, stim, smooth_ms=None)
        (image,) = ax.images
        values = image.get_array()
        duration = corpus.stims.set_index("md5").loc[stim, "duration"]
        assert values.shape == (len(units), int((ds.time.values < duration + POST).sum()))
        unheard = ~units["neuron"].isin(heard_by(corpus, stim)).to_numpy()
        n_grey = int(np.ma.getmaskarray(values).all(axis=1).sum())
        assert n_grey == unheard.sum() == int((ds.n_trials.sel(stim=stim) == 0).sum())
        np.testing.assert_array_equal(image.unheard, unheard)
        # drawn in the grey, which no rate takes
        rgba = image.to_rgba(values)
        grey = np.array(to_rgba(plot.UNHEARD_COLOR))
        is_grey = np.isclose(rgba, grey, atol=1 / 255).all(-1)
        assert is_grey[unheard].all()
        # a heard neuron's row is grey exactly where none of its trials recorded (e.g. before a short pre_time)
        for i in np.flatnonzero(~unheard):
            np.testing.assert_array_equal(is_grey[i], np.isnan(raw_psth(corpus, ds, stim, units["neuron"][i])))
        assert f"not heard ({n_grey} of {len(units)})" in [t.get_text() for t in ax.get_legend().get_texts()]
        # rows are the neurons' PSTHs in spikes/s
        i = int(np.flatnonzero(~unheard)[0])
        np.testing.assert_allclose(np.ma.filled(values[i], np.nan), raw_psth(corpus, ds, stim, units["neuron"][i]),
                                   rtol=1e-5)
        assert ax.get_xlabel() == "time from stimulus onset (s)"
        assert stim[:8] in ax.get_title(loc="left")
        assert [t.get_text() for t in ax.get_yticklabels()] == list(ds.neuron.values)
        seen.append(n_grey)
    assert min(seen) == 0 and max(seen) > 0  # both cases occur in the sample


def test_population_raster_grouped_by_animal_and_site_then_sorted_by_electrode(corpus, ds):
    units = kept_units(corpus, ds)
    units["site_number"] = units["site"].str.extract(r"(\d+)", expand=False).astype(int)
    expected = units.sort_values(["animal", "site_number", "electrode", "subsort_id"], kind="stable",
                                 na_position="last").reset_index(drop=True)
    stim = str(ds.stim.values[0])
    ax = plot.population_raster(ds, stim, sort="electrode")
    (image,) = ax.images
    assert list(image.neurons) == list(expected["neuron"])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(expected["neuron"])
    assert "electrode" in ax.get_ylabel()
    # the grey rows moved with their neurons
    unheard = ~expected["neuron"].isin(heard_by(corpus, stim)).to_numpy()
    np.testing.assert_array_equal(np.ma.getmaskarray(image.get_array()).all(axis=1), unheard)
    # one separator between consecutive (animal, site) groups, each group labelled at its middle
    key = expected["animal"] + "\n" + expected["site"]
    starts = [i for i in range(1, len(key)) if key[i] != key[i - 1]]
    separators = sorted(ln.get_ydata()[0] for ln in ax.lines if ln.get_gid() == "group-boundary")
    assert separators == [s - 0.5 for s in starts]
    (labels,) = ax.child_axes
    bounds = [0, *starts, len(key)]
    assert [t.get_text() for t in labels.get_yticklabels()] == [key[a] for a in bounds[:-1]]
    np.testing.assert_allclose(labels.get_yticks(), [(a + b - 1) / 2 for a, b in zip(bounds[:-1], bounds[1:])])
    # each group's e16/e17 boundary, where the group has electrodes on both sides
    splits = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        low = int((expected["electrode"][a:b] <= 16).sum())
        assert (expected["electrode"][a:a + low] <= 16).all() and (expected["electrode"][a + low:b] >= 17).all()
        if 0 < low < b - a:
            splits.append(a + low - 0.5)
    boundaries = sorted(ln.get_ydata()[0] for ln in ax.lines if ln.get_gid() == "hemisphere-boundary")
    assert boundaries == splits and splits
    assert "hann 21 ms smoothing" in ax.get_title(loc="left")
    unsorted = plot.population_raster(ds, stim, smooth_ms=None)
    assert not [ln for ln in unsorted.lines if ln.get_gid() in ("hemisphere-boundary", "group-boundary")]
    assert "no smoothing" in unsorted.get_title(loc="left")


def test_coverage_image_is_n_trials_with_never_heard_pairs_grey(corpus, ds):
    ax = plot.coverage(ds)
    (image,) = ax.images
    truth = corpus.pairs.set_index(["md5", "neuron"])["n_trials"]
    expected = np.array([[truth.get((s, n), 0) for n in ds.neuron.values] for s in ds.stim.values])
    values = image.get_array()
    np.testing.assert_array_equal(np.ma.filled(values.astype(float), 0), expected)
    np.testing.assert_array_equal(image.unheard, expected == 0)
    rgba = image.to_rgba(values)
    is_grey = np.isclose(rgba, np.array(to_rgba(plot.UNHEARD_COLOR)), atol=1 / 255).all(-1)
    assert is_grey[expected == 0].all() and not is_grey[expected > 0].any()
    assert 0 < (expected == 0).sum() < expected.size
    assert [t.get_text() for t in ax.get_xticklabels()] == list(ds.neuron.values)
    assert f"never heard ({(expected == 0).sum()} of {expected.size} pairs)" in \
        [t.get_text() for t in ax.get_legend().get_texts()]


def test_spectrogram_colorbar_names_the_quantity_and_units(ds):
    ax = plot.spectrogram(ds, str(ds.stim.values[0]))
    (bar,) = [a for a in ax.figure.axes if a is not ax]
    assert bar.get_ylabel() == "(mel PSD)$^{1/3}$, PSD in full scale$^2$/Hz"
    assert len(plot.spectrogram(ds, str(ds.stim.values[0]), colorbar=False).figure.axes) == 1


def test_bad_arguments_name_the_problem(ds):
    stim, neuron = str(ds.stim.values[0]), str(ds.neuron.values[0])
    with pytest.raises(ValueError, match="sort"):
        plot.population_raster(ds, stim, sort="depth")
    with pytest.raises(KeyError, match="nope"):
        plot.population_raster(ds, "nope")
    with pytest.raises(KeyError, match="neuron 'x/y'"):
        plot.single_cell(ds, "x/y")
    with pytest.raises(ValueError, match="spikes="):
        plot.raster(ds.assign_attrs(root="/no/such/root"), stim, neuron)
    with pytest.raises(TypeError, match="Dataset"):
        plot.population_raster(ds.spike_count, stim)


def test_inspect_figures_writes_three_pngs(corpus, tmp_path):
    import matplotlib.pyplot as plt

    paths = plot.inspect_figures(corpus.root, tmp_path / "figs", dpi=40)
    assert [p.name for p in paths] == list(plot.FIGURE_NAMES)
    for path in paths:
        assert path.parent == tmp_path / "figs"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    assert plt.get_fignums() == []  # nothing left in pyplot, nothing shown
