"""genesis.distributed.comm on gloo: the reduce-scatter, all-gather and reduce built from
point-to-point sends and receives (NOTE: [gloo reduce-scatter and all-gather] in
genesis/distributed/comm.py) give the bits of torch.distributed's own collectives, in place
and asynchronously as ZeroOptimizer calls them (with its BufferPool, whose temporaries are
reused), on 2 and 4 ranks, for empty, one-element and odd-sized pieces, within subgroups and
in a group with a backend per device."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import comm_workers  # noqa: E402

import harness  # noqa: E402


@pytest.mark.parametrize("world_size", [2, 4])
def test_point_to_point_collectives_equal_torch(world_size, tmp_path):
    results = harness.run(comm_workers.collectives, world_size, out_dir=tmp_path)
    for rank, cases in enumerate(results):
        assert len(cases) == len(comm_workers.DTYPES) * 4
        for r in cases:
            assert r["reduce_scatter"] and r["reduce_scatter_sync"], (rank, r)
            assert r["others_untouched"], (rank, r)
            assert r["all_gather"], (rank, r)
            assert r["pooled"] and r["reused"], (rank, r)
            assert r["gather_temporaries"] == 0, (rank, r)
            assert r["reduce"], (rank, r)


def test_point_to_point_collectives_within_subgroups(tmp_path):
    results = harness.run(comm_workers.subgroup_collectives, 4, out_dir=tmp_path)
    for rank, cases in enumerate(results):
        assert len(cases) == len(comm_workers.DTYPES) * 2
        for r in cases:
            assert r["reduce_scatter"] and r["all_gather"] and r["reduce"], (rank, r)


def test_per_device_backend_takes_the_point_to_point_path(tmp_path):
    for r in harness.run(comm_workers.per_device_backend, 2, out_dir=tmp_path):
        assert r == dict(point_to_point=True, equal=True), r


@pytest.mark.parametrize("shard_grads", [False, True], ids=["zero2", "shard_grads"])
def test_zero2_keeps_a_few_bucket_temporaries_not_one_per_bucket(shard_grads, tmp_path):
    """At most MAX_IN_FLIGHT reductions (and gathers) holding a temporary run at once, so the
    pool keeps a few buckets' worth (a receive buffer, and with shard_grads a staging buffer,
    per bucket in flight), however many buckets the model has."""
    from genesis.distributed.zero import POOLED_BUFFERS

    for r in harness.run(comm_workers.pooled_temporaries, 2, shard_grads, out_dir=tmp_path):
        assert 0 < r["pooled"] <= POOLED_BUFFERS < r["buckets"], r
