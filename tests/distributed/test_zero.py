"""genesis.distributed on CPU with gloo, in 2 and 4 spawned processes (tests/distributed/
workers.py holds what each rank runs; harness.py spawns and always reaps them).

Spawning a group costs seconds on a loaded machine, so each process group runs many cases and
the tests below assert on its results (module-scoped fixtures, in the order 2 -> 4 -> 2 ranks
that the resharding checks need)."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import genesis  # noqa: E402
from genesis.distributed.zero import POOLED_BUFFERS  # noqa: E402

import harness  # noqa: E402
import workers  # noqa: E402

# float64: the sharded and the reference runs differ only in the order of a few additions of
# the same numbers, far below 1e-12. float32: the ranks' partial batch means are averaged
# instead of the whole batch being summed at once (a different reduction order), so each
# gradient can differ by a few float32 ulps, and 30 steps of Adam move the parameters by up to
# ~lr per step: 1e-6 absolute is a few ulps of parameters of size ~0.5.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.complex128: 1e-12, torch.complex64: 1e-6}


# resharded in both directions: an element-wise rule and one that keeps whole tensors per rank
RESHARD_CASES = ("adamw-2", "lamb-2", "adafactor-1", "adamw-2-c128")
FOUR_RANK_CASES = [
    "adamw-1",
    "adamw-2",
    "sgd-2",
    "adam-2-extras",
    "lamb-1",
    "lamb-2",
    "adafactor-2",
    "lamb-2-extras",
    "adamw-2-sg",
    "lamb-2-sg",
    "adam-2-extras-sg",
    "adam-2-extras-c128-sg",
    "lamb-2-c128",
]


def _reshard(rank, world_size, save_dir, load_dir):
    return {case: workers.resharding(rank, world_size, save_dir, load_dir, case) for case in RESHARD_CASES}


def _two_ranks_first(rank, world_size, save_dir):
    return dict(
        equivalence=workers.equivalence(rank, world_size, list(workers.CASES)),
        consolidated=workers.consolidated_loads(rank, world_size),
        consolidated_lamb=workers.consolidated_loads(rank, world_size, "lamb-2", (genesis.optim.LAMB,)),
        consolidated_complex=workers.consolidated_loads(rank, world_size, "adamw-2-c128"),
        consolidated_adafactor=workers.consolidated_loads(
            rank, world_size, "adafactor-1", (genesis.optim.Adafactor, torch.optim.Adafactor)
        ),
        mixed=workers.mixed_precision(rank, world_size),
        mixed_lamb=workers.mixed_precision(rank, world_size, genesis.optim.LAMB),
        reshard=_reshard(rank, world_size, save_dir, None),
    )


def _four_ranks(rank, world_size, save_dir, load_dir):
    return dict(
        equivalence=workers.equivalence(rank, world_size, FOUR_RANK_CASES),
        reshard=_reshard(rank, world_size, save_dir, load_dir),
    )


def _two_ranks_second(rank, world_size, load_dir, interrupted_dir, kind_dir):
    return dict(
        another_kind=workers.checkpoint_of_another_kind(rank, world_size, kind_dir),
        reshard=_reshard(rank, world_size, None, load_dir),
        interrupted=workers.interrupted_checkpoint(rank, world_size, interrupted_dir),
        zero_redundancy=workers.torch_zero_redundancy(rank, world_size),
        versions=workers.versions(rank, world_size),
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    names = ("out", "ckpt2", "ckpt4", "interrupted", "kind")
    for n in names:
        (root / n).mkdir()
    return {n: str(root / n) for n in names}


@pytest.fixture(scope="module")
def two(dirs):
    return harness.run(_two_ranks_first, 2, dirs["ckpt2"], out_dir=dirs["out"])


@pytest.fixture(scope="module")
def four(dirs, two):  # loads the checkpoint the 2-rank run wrote
    return harness.run(_four_ranks, 4, dirs["ckpt4"], dirs["ckpt2"], out_dir=dirs["out"], deadline_s=180)


@pytest.fixture(scope="module")
def two_again(dirs, four):  # loads the checkpoint the 4-rank run wrote
    return harness.run(_two_ranks_second, 2, dirs["ckpt4"], dirs["interrupted"], dirs["kind"], out_dir=dirs["out"])


def _check_equivalence(results, world_size):
    for rank, result in enumerate(results):
        for case, r in result["equivalence"].items():
            dtype = workers.CASES[case][3]
            assert r["params"] <= TOLERANCE[dtype], (case, rank, r)
            assert r["state"] <= TOLERANCE[dtype], (case, rank, r)
            assert r["lrs"] == r["ref_lrs"], (case, rank, r)
            if r["stage"] == 2 and not r["whole_tensors"]:
                # gloo's point-to-point reduce-scatter (and shard_grads' staging) take a bucket-sized
                # temporary each, kept for reuse (test_comm.py checks the bound with many buckets)
                assert 0 < r["pooled"] <= POOLED_BUFFERS, (case, rank, r)
            if r["whole_tensors"]:
                # whole tensors per rank: 1/N give or take the largest tensor's state
                # (layout.owners; docs/distributed.md)
                bound = r["max_tensor_bytes"]
            else:
                # each rank holds 1/N of the state, give or take the padding of its bucket pieces
                arrays = r["full_bytes"] // (r["numel"] * dtype.itemsize)
                bound = workers.BUCKET * dtype.itemsize * arrays
            assert abs(r["local_bytes"] - r["full_bytes"] / world_size) <= bound, (case, r)
            grad_bytes = r["numel"] * dtype.itemsize
            if r["shard_grads"]:
                # 1/N of the gradients, give or take a bucket's padding or the largest tensor
                # (the state bound above, for one array); none left on the parameters
                arrays = max(1, r["full_bytes"] // (r["numel"] * dtype.itemsize))
                assert abs(r["grad_bytes"] - grad_bytes / world_size) <= bound / arrays, (case, r)
                assert r["grads_left"] == 0, (case, r)
            else:  # the full gradient buffer (padded), every parameter's gradient a view of it
                assert r["grad_bytes"] >= grad_bytes and r["grads_left"] == r["params_count"], (case, r)
    for case, r in results[0]["equivalence"].items():
        if r["whole_tensors"]:  # no padding: the ranks' states add up to the unsharded one
            assert sum(result["equivalence"][case]["local_bytes"] for result in results) == r["full_bytes"], case
        if r["shard_grads"]:  # every element's gradient is kept by one rank (plus padding)
            total = sum(result["equivalence"][case]["grad_bytes"] for result in results)
            assert total >= r["numel"] * workers.CASES[case][3].itemsize, case


def test_two_ranks_match_unsharded(two):
    _check_equivalence(two, 2)
    assert set(two[0]["equivalence"]) == set(workers.CASES)
    assert {c for c, r in two[0]["equivalence"].items() if r["whole_tensors"]} == {
        c for c in workers.CASES if c.startswith(("lamb", "adafactor", "muon"))
    }


def test_four_ranks_match_unsharded(four):
    _check_equivalence(four, 4)


def test_bfloat16_with_master_weights_shards_the_master_weights(two):
    for result in two:
        r = result["mixed"]
        assert r["master_dtypes"] == ["torch.float32"]
        # two float32 moments + one float32 master weight per element, split over 2 ranks
        assert abs(r["local_bytes"] - 12 * r["numel"] / 2) <= workers.BUCKET * 12
        assert r["rounding"] == 0.0
        assert r["moved"] > 0 and r["same_on_all"]


def test_bfloat16_lamb_keeps_whole_tensors_with_their_master_weights(two):
    for result in two:
        r = result["mixed_lamb"]
        assert r["master_dtypes"] == ["torch.float32"]
        assert abs(r["local_bytes"] - 12 * r["numel"] / 2) <= 12 * r["max_numel"]
        assert r["rounding"] == 0.0
        assert r["moved"] > 0 and r["same_on_all"]
    assert sum(result["mixed_lamb"]["local_bytes"] for result in two) == 12 * two[0]["mixed_lamb"]["numel"]


def test_consolidated_state_dict_loads_into_genesis_and_torch(two):
    for result in two:
        assert result["consolidated"]["bad_lr"] == "untouched"
        assert result["consolidated"]["broadcast"] == 0.0
        assert result["consolidated"]["genesis"] <= 1e-12
        assert result["consolidated"]["torch"] <= 1e-12
        assert result["consolidated"]["zero"] <= 1e-12


def test_consolidated_state_dict_of_complex_parameters_loads_into_genesis_and_torch(two):
    for result in two:
        assert set(result["consolidated_complex"]) == {"genesis", "torch", "zero"}
        for diff in result["consolidated_complex"].values():
            assert diff <= 1e-12


def test_consolidated_state_dict_of_whole_tensor_rules_loads_unsharded(two):
    """LAMB's into genesis's LAMB (torch has none), Adafactor's into genesis's and torch's."""
    for result in two:
        assert set(result["consolidated_lamb"]) == {"genesis", "zero"}
        assert set(result["consolidated_adafactor"]) == {"genesis", "torch", "zero"}
        for diff in (*result["consolidated_lamb"].values(), *result["consolidated_adafactor"].values()):
            assert diff <= 1e-12


def test_reshard_2_to_4(four):
    for result in four:
        assert set(result["reshard"]) == set(RESHARD_CASES)
        for case, r in result["reshard"].items():
            assert r["resumed"] <= 1e-12, case


def test_reshard_4_to_2(two_again):
    for result in two_again:
        assert set(result["reshard"]) == set(RESHARD_CASES)
        for case, r in result["reshard"].items():
            assert r["resumed"] <= 1e-12, case


def test_checkpoint_of_another_kind_of_rule_is_refused(two_again):
    for result in two_again:
        assert "another kind" in result["another_kind"], result["another_kind"]


def test_interrupted_checkpoint_leaves_previous_loadable(two_again):
    for result in two_again:
        r = result["interrupted"]
        assert r["crashed"]
        assert r["diff"] == 0.0
        assert r["leftovers"] == []


def test_torch_zero_redundancy_optimizer_with_genesis_adamw_lamb_adafactor(two_again):
    for result in two_again:
        assert set(result["zero_redundancy"]) == {"AdamW", "LAMB", "Adafactor"}
        for diff in result["zero_redundancy"].values():
            assert diff <= 1e-12


def test_a_step_between_forward_and_backward_is_torchs_error(two_again):
    for rank, result in enumerate(two_again):
        assert result["versions"] == {
            "stage1": (True, True),
            "stage2": (True, True),
            "shard_grads": (True, True),
            "overlap": (True, True),
        }, rank


def test_dead_rank_fails_the_others_with_a_clear_error(dirs):
    results = harness.run_raw(workers.rank_dies, 2, out_dir=dirs["out"], pg_timeout_s=15, deadline_s=90)
    kind, value = results[0]
    assert kind == "ok", value
    assert value["error"] is not None, "the surviving rank's step did not fail"
    assert "genesis.distributed" in value["message"] and "died" in value["message"]
    assert value["seconds"] < 15 + 10
    assert results[1][0] == "missing"
