"""The binning kernels against direct numpy computations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aa4xr.binning import bin_index, bin_rows, bin_starts, count_block, row_bins, span_mask, time_grid, window_mask


@pytest.mark.parametrize("dt,pre", [(0.001, 0.0), (0.005, 0.3), (0.0037, 0.011)])
def test_bin_index_matches_searchsorted_including_edges(dt, pre):
    rng = np.random.default_rng(1)
    n = 800
    edges = -pre + np.arange(n + 1) * dt
    below = np.nextafter(edges, -np.inf)
    spikes = np.concatenate([rng.uniform(edges[0] - 1, edges[-1] + 1, 5000), edges, below, edges[:-1] + dt / 2])
    expected = np.searchsorted(edges, spikes, side="right") - 1
    expected[(expected < 0) | (expected >= n)] = -1
    np.testing.assert_array_equal(bin_index(spikes, edges[:-1], dt), expected)


def test_bin_rows_equals_histogram_per_row():
    rng = np.random.default_rng(2)
    sizes = np.array([0, 5, 1, 0, 30])
    spikes = rng.uniform(-0.5, 1.5, sizes.sum())
    time = -0.2 + np.arange(100) * 0.01
    got = bin_rows(spikes, sizes, time, 0.01)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for r in range(sizes.size):
        k = np.searchsorted(np.append(time, time[-1] + 0.01), spikes[starts[r]:starts[r + 1]], side="right") - 1
        np.testing.assert_array_equal(got[r], np.bincount(k[(k >= 0) & (k < 100)], minlength=100))


def test_time_grid_and_masks():
    time = time_grid(np.array([0.02, 0.012]), dt=0.005, pre=0.01, post=0.003)
    np.testing.assert_allclose(time, -0.01 + np.arange(7) * 0.005)  # t_k < 0.023
    np.testing.assert_array_equal(window_mask(time, np.array([0.012]), 0.003)[0], time < 0.015)
    span = span_mask(time, 0.005, np.array([0.02, 0.02]), np.array([0.004, np.nan]), np.array([0.0, np.nan]))
    np.testing.assert_array_equal(span[0], (time + 0.005 > -0.004) & (time <= 0.02))
    assert span[1].all()


def test_count_block_places_rows_and_masks():
    time = np.arange(4) * 0.1
    spikes = np.array([0.05, 0.15, 0.15, 0.35, 9.0])
    block = count_block(spikes, starts=np.array([0, 3]), sizes=np.array([3, 2]), cell=np.array([0, 3]),
                        row_duration=np.array([0.4, 0.25]), pre_time=np.array([1.0, 1.0]),
                        post_time=np.array([1.0, 1.0]), shape=(2, 1, 2), time=time, dt=0.1, post=0.0)
    expected = np.full((2, 1, 2, 4), np.nan, np.float32)
    expected[0, 0, 0] = [1, 2, 0, 0]
    expected[1, 0, 1, :3] = [0, 0, 0]  # bin 0.3 lies past the 0.25 s stimulus
    np.testing.assert_array_equal(block, expected)


def test_row_bins_equal_the_span_and_window_masks():
    rng = np.random.default_rng(0)
    for dt, pre in ((0.001, 0.0), (0.005, 0.25), (0.01, 1.0)):
        time = time_grid(np.array([2.0]), dt, pre, 0.3)
        n = 500
        duration = rng.uniform(0.05, 2.0, n)
        pre_time = np.where(rng.random(n) < 0.2, np.nan, rng.choice([0.0, 0.1, pre, 2.0], n) + rng.normal(0, dt, n))
        post_time = np.where(rng.random(n) < 0.2, np.nan, rng.choice([0.0, 0.1, 0.3, 2.0], n))
        expected = span_mask(time, dt, duration, pre_time, post_time) & window_mask(time, duration, 0.3)
        first, stop = row_bins(time, dt, duration, pre_time, post_time, 0.3)
        k = np.arange(time.size)
        np.testing.assert_array_equal((k >= first[:, None]) & (k < stop[:, None]), expected)


def test_bin_index_keeps_a_spike_just_below_the_last_edge():
    time = np.arange(602) * 0.005  # the last edge, 602 * 0.005, is 3.0100000000000002
    assert bin_index(np.array([3.01, 3.0100000000000002]), time, 0.005).tolist() == [601, -1]


@pytest.mark.parametrize("dt,pre", [(0.001, 0.0), (0.005, 0.5), (0.0037, 0.011)])
def test_bin_index_on_a_slice_of_the_grid_places_spikes_as_the_whole_grid(dt, pre):
    grid = bin_starts(5000, dt, pre)
    spikes = np.concatenate([grid, np.nextafter(grid, -np.inf), np.nextafter(grid, np.inf)])
    whole = bin_index(spikes, grid, dt)
    for lo in (1, 7, 1234):
        part = bin_index(spikes, grid[lo:lo + 2000], dt)
        interior = (whole >= lo) & (whole < lo + 1999)  # the slice's own last edge is time[0] + n * dt
        np.testing.assert_array_equal(part[interior], whole[interior] - lo)
        assert (part[(whole < lo) | (whole > lo + 1999)] == -1).all()


def reference_block(spikes, sizes, cell, duration, pre_time, post_time, shape, time, dt, post):
    """``count_block`` written out: one histogram per row, NaN by the window and span definitions."""
    edges = np.append(time, time[0] + time.size * dt if time.size else 0.0)
    block = np.full((int(np.prod(shape)), time.size), np.nan, np.float32)
    ends = np.cumsum(sizes)
    for r, c in enumerate(cell):
        row = spikes[ends[r] - sizes[r]:ends[r]]
        counts = np.histogram(row[row != edges[-1]], edges)[0]  # histogram's last bin is closed
        lo = -np.inf if np.isnan(pre_time[r]) else -pre_time[r]
        hi = np.inf if np.isnan(post_time[r]) else duration[r] + post_time[r]
        kept = (time < duration[r] + post) & (time + dt > lo) & (time <= hi)
        block[c] = np.where(kept, counts, np.nan)
    return block.reshape(*shape, time.size)


@st.composite
def blocks(draw):
    """Random ragged ``count_block`` inputs: edge spikes, empty rows, NaN spans, shuffled sparse cells."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dt = draw(st.sampled_from([0.001, 0.005, 0.0037, 0.01]))
    pre, post = draw(st.sampled_from([0.0, 0.011, 0.05])), draw(st.sampled_from([0.0, 0.02]))
    offset, n_time = draw(st.integers(0, 3)), draw(st.integers(0, 40))
    time = bin_starts(offset + n_time, dt, pre)[offset:]
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    cell = rng.permutation(int(np.prod(shape)))[:draw(st.integers(0, int(np.prod(shape))))]
    n = cell.size
    duration = rng.choice([0.0, 0.013, 0.05, 0.2], n) + rng.choice([0.0, dt / 3], n)
    edges = -pre + np.arange(offset + n_time + 2) * dt
    span = rng.choice(np.concatenate([edges[:6], edges[:6] + dt / 2, [0.0, 1.0, np.nan]]), (2, n))
    sizes = rng.choice([0, 1, 3, 8], n)
    pool = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [-1.0, 5.0]])
    spikes = np.where(rng.random(sizes.sum()) < 0.5, rng.choice(pool, sizes.sum()),
                      rng.uniform(-pre - 2 * dt, edges[-1] + dt, sizes.sum()))
    return dict(spike_time=spikes, sizes=sizes, cell=cell, row_duration=duration, pre_time=-span[0],
                post_time=span[1], shape=shape, time=time, dt=dt, post=post)


@settings(max_examples=300, deadline=None)
@given(blocks(), st.booleans(), st.booleans())
def test_count_block_equals_a_histogram_per_row(args, with_starts, with_out):
    expected = reference_block(args["spike_time"], args["sizes"], args["cell"], args["row_duration"],
                               args["pre_time"], args["post_time"], args["shape"],
                               args["time"], args["dt"], args["post"])
    spikes, starts = args.pop("spike_time"), None
    if with_starts:  # the rows scattered in reverse order, with gaps, in a longer array
        ends = np.cumsum(args["sizes"])
        pieces = [np.concatenate([[7.0], spikes[e - n:e]]) for e, n in zip(ends, args["sizes"])][::-1]
        starts = np.cumsum([0] + [p.size for p in pieces])[:-1][::-1] + 1
        spikes = np.concatenate([np.empty(0)] + pieces)
    out = np.full((*args["shape"], args["time"].size), 3.0, np.float32) if with_out else None
    got = count_block(spikes, starts, **args, out=out)
    assert got is out or out is None
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_count_block_over_many_slabs_and_spike_chunks():
    rng = np.random.default_rng(3)
    dt, post, shape = 0.001, 0.1, (3, 29, 10)  # 35 MB of output, 26,000 spikes
    time = time_grid(np.array([8.0]), dt, 0.5, post)
    cell = rng.permutation(870)[:800]
    duration = rng.choice([2.0, 5.5, 8.0], cell.size)
    pre_time = np.where(rng.random(cell.size) < 0.1, np.nan, rng.choice([0.2, 1.0], cell.size))
    post_time = np.where(rng.random(cell.size) < 0.1, 0.0, rng.uniform(0, 1, cell.size))
    sizes = rng.integers(10, 50, cell.size)
    spikes = np.sort(rng.uniform(-1, 9, sizes.sum()))
    got = count_block(spikes, None, sizes, cell, duration, pre_time, post_time, shape, time, dt, post)
    expected = reference_block(spikes, sizes, cell, duration, pre_time, post_time, shape, time, dt, post)
    np.testing.assert_array_equal(got, expected)


def test_count_block_refuses_an_out_of_the_wrong_shape_or_layout():
    args = (np.array([0.5]), None, np.array([1]), np.array([0]), np.array([1.0]), np.array([0.0]),
            np.array([0.0]), (1, 1, 2), np.arange(4) * 0.25, 0.25, 0.0)
    with pytest.raises(ValueError, match=r"out must be C-contiguous with shape \(1, 1, 2, 4\), got \(1, 1, 2, 3\)"):
        count_block(*args, out=np.empty((1, 1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        count_block(*args, out=np.empty((1, 1, 2, 8), np.float32)[..., ::2])
