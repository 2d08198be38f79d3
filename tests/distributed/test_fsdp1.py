"""genesis optimizers on FSDP1 (torch.distributed.fsdp.FullyShardedDataParallel, gloo, 2
processes) with use_orig_params False and True, against torch's optimizers on an identical
model: parameters and state after 25 steps, torch.distributed.checkpoint's full state dicts in
both directions, and 8-bit state through float32_state_dict() (docs/distributed.md#fsdp1).
(torch 2.13's older FSDP.optim_state_dict_to_load loads a wrong exp_avg with
use_orig_params=True, for torch's own AdamW too; these tests use the API torch recommends.)"""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import fsdp1_workers  # noqa: E402

import harness  # noqa: E402

TOLERANCE = dict(rtol=1e-5, atol=1e-6)
ORIG = pytest.mark.parametrize("use_orig_params", [False, True], ids=["flat", "orig"])


@ORIG
def test_every_elementwise_rule_on_fsdp1_matches_torch(use_orig_params, tmp_path):
    results = harness.run(fsdp1_workers.rule_parity, 2, use_orig_params, out_dir=tmp_path, deadline_s=240)
    for rank, cases in enumerate(results):
        assert [c["rule"] for c in cases] == [name for name, _ in fsdp1_workers.RULES]
        for case in cases:
            where = f"{case['rule']} on rank {rank}"
            assert case["params"] and case["states"], where
            for got, want in case["params"]:
                torch.testing.assert_close(got, want, **TOLERANCE, msg=where)
            for key, got, want in case["states"]:
                torch.testing.assert_close(got, want, **TOLERANCE, msg=f"{where}, state {key}")


@ORIG
def test_fsdp1_optim_state_dicts_cross_between_genesis_and_torch(use_orig_params, tmp_path):
    results = harness.run(fsdp1_workers.checkpoint_round_trips, 2, use_orig_params, out_dir=tmp_path)
    for rank, out in enumerate(results):
        ours, theirs = out["keys"]
        assert ours == theirs == ["0.bias", "0.weight", "2.bias", "2.weight"], rank
        assert len(out["full"]) == 12  # step, exp_avg and exp_avg_sq of each original parameter
        for key, got, want in out["full"]:
            assert got.shape == want.shape, key
            torch.testing.assert_close(got, want, **TOLERANCE, msg=f"{key} on rank {rank}")
        for direction, pairs in out["continued"].items():
            for got, want in pairs:
                torch.testing.assert_close(got, want, **TOLERANCE, msg=f"{direction} on rank {rank}")


@ORIG
def test_fsdp1_eight_bit_state_saves_through_float32_state_dict(use_orig_params, tmp_path):
    results = harness.run(fsdp1_workers.eight_bit_state, 2, use_orig_params, out_dir=tmp_path)
    for rank, out in enumerate(results):
        assert out["shapes"]["0.weight"] == {
            "step": ((), torch.float32),
            "exp_avg": ((700, 5), torch.float32),
            "exp_avg_sq": ((700, 5), torch.float32),
        }, rank
        assert out["unhooked"] is not None, rank  # torch's gather fails on the block scales unhooked
        assert out["coded"] and set(out["coded"]) == {torch.uint8}, rank
        for got, want in out["continued"]:
            torch.testing.assert_close(got, want, **TOLERANCE, msg=f"rank {rank}")
