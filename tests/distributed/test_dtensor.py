"""genesis optimizers on DTensor parameters: FSDP2 (torch.distributed.fsdp.fully_shard) over a
CPU device mesh on gloo, 2 and 4 processes, against torch's optimizers on an identical model
(NOTE: [DTensor parameters] in genesis/_interop.py; docs/distributed.md#fsdp2-and-dtensor-parameters).

Both models see the same data and FSDP2 reduces their gradients the same way, so their
gradients are equal and every difference is the optimizers': float32 within rtol 1e-5 /
atol 1e-6 after 25 steps, float64 within 1e-10."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import dtensor_workers  # noqa: E402

import harness  # noqa: E402

TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize(
    "world_size, dtype", [(2, "float32"), (2, "float64"), (4, "float32")], ids=["2-float32", "2-float64", "4-float32"]
)
def test_every_elementwise_rule_on_fsdp2_matches_torch(world_size, dtype, tmp_path):
    results = harness.run(dtensor_workers.rule_parity, world_size, dtype, out_dir=tmp_path, deadline_s=240)
    names = [name for name, _ in dtensor_workers.RULES]
    for rank, cases in enumerate(results):
        assert [c["rule"] for c in cases] == names
        for case in cases:
            where = f"{case['rule']} on rank {rank}"
            assert case["layout"], f"{where}: state is not laid out as torch's (DTensors like the parameters)"
            for got, want in case["params"]:
                torch.testing.assert_close(got, want, **TOLERANCE[dtype], msg=where)
            for key, got, want in case["states"]:
                torch.testing.assert_close(got, want, **TOLERANCE[dtype], msg=f"{where}, state {key}")
            assert case["states"], f"{where}: no state compared"
    if world_size == 4:  # the last layer's 3 rows leave rank 3 an empty shard of its weight
        assert 0 in results[3][0]["shard_sizes"]


def test_distributed_checkpoint_state_dicts_cross_between_genesis_and_torch(tmp_path):
    for rank, out in enumerate(harness.run(dtensor_workers.checkpoint_round_trips, 2, out_dir=tmp_path)):
        assert out["full_state_is_plain"] and out["sharded_state_is_dtensor"], rank
        for key in ("genesis->torch", "torch->genesis", "sharded genesis->genesis"):
            for got, want in out[key]:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{key} on rank {rank}")


def test_refusals_are_clear_and_change_nothing(tmp_path):
    for out in harness.run(dtensor_workers.refusals, 2, out_dir=tmp_path):
        assert out["lamb_sharded"].startswith("ValueError") and "replicated DTensors only" in out["lamb_sharded"]
        for key in ("muon", "lbfgs", "sparse_adam"):
            assert out[key].startswith("TypeError") and "does not update DTensor" in out[key], out[key]
        assert out["int8"].startswith("ValueError") and "8-bit state" in out["int8"]
        assert out["int8_at_step"].startswith("ValueError") and "8-bit state" in out["int8_at_step"]
        assert (
            out["plain_grad"].startswith("TypeError")
            and "is a plain tensor, but the parameter is a DTensor" in (out["plain_grad"])
        )
        assert out["unchanged"]
        assert out["plain_grad_later"].startswith("TypeError") and "plain tensor" in out["plain_grad_later"]
        assert out["unchanged_later"]
        assert out["redistributed"]


def test_replicated_dtensors_take_the_reduction_rules_exactly(tmp_path):
    for out in harness.run(dtensor_workers.replicated_reduction_rules, 2, out_dir=tmp_path):
        assert out == {"LAMB": True, "Adafactor": True}


def test_a_step_between_forward_and_backward_is_torchs_error_on_dtensors(tmp_path):
    for out in harness.run(dtensor_workers.versions, 2, out_dir=tmp_path):
        assert sorted(out) == ["AdamW/genesis", "AdamW/torch", "LAMB/genesis"]
        for key, (advanced, frozen_kept, raised) in out.items():
            assert advanced and frozen_kept, key
            assert "modified by an inplace operation" in raised, (key, raised)


def test_clipping_and_grad_scaler_on_fsdp2(tmp_path):
    for rank, out in enumerate(harness.run(dtensor_workers.clipping_and_scaling, 2, out_dir=tmp_path)):
        got, want = out["eager_total"]
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        for key in ("eager_grads", "value_grads"):
            assert out[key]
            for got, want in out[key]:
                torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"{key} on rank {rank}")
        for got, want in out["deferred_totals"]:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for got, want in out["deferred_params"]:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # step 2 had an inf in rank 1's shard: every rank skipped it, and only it
        assert out["skipped"] == [False, False, True, False], (rank, out["skipped"])
        assert out["scale"] == 512.0


def test_storage_less_subclasses_are_refused_not_dereferenced(tmp_path):
    (out,) = harness.run(dtensor_workers.storage_less_subclass, 1, out_dir=tmp_path)
    assert out["data_ptr"] == 0
    for key in ("param", "grad", "clip"):
        assert out[key].startswith("TypeError") and "without storage of its own" in out[key], (key, out[key])
    assert out["unchanged"]


def test_save_and_flat_buffers_refuse_dtensors(tmp_path):
    for out in harness.run(dtensor_workers.elsewhere, 2, str(tmp_path), out_dir=tmp_path):
        assert out["flat"].startswith("TypeError") and "already sharded" in out["flat"]
        assert out["save"].startswith("TypeError") and "torch.distributed.checkpoint" in out["save"]


def test_a_replaced_state_dtensor_is_used_or_refused_never_stale(tmp_path):
    for out in harness.run(dtensor_workers.replaced_state, 2, out_dir=tmp_path):
        assert out["same"] == [True, True]
        assert out["misplaced"].startswith("ValueError") and "laid out as" in out["misplaced"], out["misplaced"]
        assert out["unchanged"]


def test_bfloat16_fsdp2_with_master_weights_gives_the_shards_bits(tmp_path):
    for out in harness.run(dtensor_workers.bf16_master_weights, 2, out_dir=tmp_path):
        assert out == {"same": True, "masters": 3, "laid_out": True, "same_master": True}
