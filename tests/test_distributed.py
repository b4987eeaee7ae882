"""The same code on a dask.distributed cluster: ingest fans out, binning runs on workers."""

import numpy as np
import pytest

import aa4xr

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_cluster_results_equal_local(corpus, client, fresh_cache):
    with distributed.get_task_stream(client) as ingest:
        ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.005, pre=0.1, executor=client.get_executor())
    read_tasks = [t for t in ingest.data if "read_or_error" in str(t["key"])]
    assert len(read_tasks) == len(corpus.units), "every unit file was read on the workers"
    assert list(fresh_cache.glob("stores/*.nc"))
    with distributed.get_task_stream(client) as binning:
        remote = client.compute(ds.spike_count.sum("trial")).result()
    assert any("spike_count" in str(t["key"]) for t in binning.data), "binning ran on the workers"
    workers = client.run(lambda: 1)
    assert len(workers) == 2
    local = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.005, pre=0.1)
    expected = local.spike_count.sum("trial").compute(scheduler="sync")
    np.testing.assert_array_equal(remote.values, expected.values)
    assert float(client.compute(ds.spike_count.mean(["trial", "time"])).result().sum()) == pytest.approx(
        float(local.spike_count.mean(["trial", "time"]).sum().compute(scheduler="sync")))
    with distributed.get_task_stream(client) as averaging:
        rate = client.compute(aa4xr.psth(ds.isel(neuron=[0, 2]), smooth_ms=None)).result()
    assert any("trial-mean" in str(t["key"]) for t in averaging.data), "the rows' trial mean ran on the workers"
    counts = local.spike_count.isel(neuron=[0, 2]).values
    with np.errstate(invalid="ignore"):
        truth = (np.nansum(counts, axis=2) / np.isfinite(counts).sum(axis=2) / 0.005).astype(np.float32)
    np.testing.assert_allclose(rate.values, truth, rtol=1e-6)
    whole = client.compute(ds.spike_count).result()  # one binning task on a worker, its chunks shipped
    np.testing.assert_array_equal(whole.values, local.spike_count.values)
