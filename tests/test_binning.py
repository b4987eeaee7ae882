"""The binning kernels against direct numpy computations."""

import numpy as np
import pytest

from aa4xr.binning import bin_index, bin_rows, count_block, row_bins, span_mask, time_grid, window_mask


@pytest.mark.parametrize("dt,pre", [(0.001, 0.0), (0.005, 0.3), (0.0037, 0.011)])
def test_bin_index_matches_searchsorted_including_edges(dt, pre):
    rng = np.random.default_rng(1)
    n = 800
    edges = -pre + np.arange(n + 1) * dt
    spikes = np.concatenate([rng.uniform(edges[0] - 1, edges[-1] + 1, 5000), edges, edges[:-1] + dt / 2])
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
