"""genesis optimizers inside the training frameworks users swap them into: Hugging Face's
Trainer, Accelerate and Lightning drive a genesis optimizer exactly as they drive torch.optim's
(the same parameters after a run, within the float32 parity tolerances), with their mixed
precision, gradient accumulation and clipping, and each resumes from its own checkpoint of a
genesis optimizer and from one of torch's as from torch's. Needs the "frameworks" extra (CI
installs it); without it the file is skipped.

Running these loops against torch.optim found one documented difference: Lightning's manual
optimization steps inside its autocast region, where torch's Adafactor computes its estimate in
bfloat16 and genesis's does not (tests/test_torch_ecosystem.py, docs/migrating-from-torch.md).
So the manual-optimization cases use rules whose torch step autocast does not reach; Adafactor
runs with automatic optimization, which Lightning steps outside the region."""

import os
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
L = pytest.importorskip("lightning")

import genesis  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-6)
LIBRARIES = {"torch": torch, "genesis": genesis}


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate (and the Trainer, built on it) keeps one process-wide state whose precision
    cannot change once set; each test starts without it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _same(got, want):
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _data(n=128):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


# ------------------------------------------------------------------ Hugging Face Trainer
class _Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))

    def forward(self, x, labels=None):
        logits = self.body(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


class _Examples(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = _data()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, k):
        return {"x": self.x[k], "labels": self.y[k]}


def _trainer_run(lib, out_dir, how, bf16, resume=None):
    """16 steps of the Trainer (checkpoint at step 8): accumulation of 2, clipping to 0.5, a
    warm-up cosine schedule, bf16 autocast or not; the optimizer handed over as objects or as a
    class and its arguments."""
    torch.manual_seed(0)
    model = _Classifier()
    args = transformers.TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=16,
        max_grad_norm=0.5,
        save_steps=8,
        learning_rate=3e-3,
        weight_decay=0.1,
        warmup_steps=3,
        lr_scheduler_type="cosine",
        bf16=bf16,
        use_cpu=True,
        seed=0,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_num_workers=0,
    )
    kwargs = {}
    if how == "objects":
        opt = lib.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        kwargs["optimizers"] = (opt, transformers.get_cosine_schedule_with_warmup(opt, 3, 16))
    else:
        kwargs["optimizer_cls_and_kwargs"] = (lib.optim.AdamW, {"lr": 3e-3, "weight_decay": 0.1})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Examples(), **kwargs)
    trainer.train(resume_from_checkpoint=resume)
    return _snapshot(model)


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("how", ["objects", "class"])
def test_hugging_face_trainer_trains_and_resumes_as_with_torch(how, bf16, tmp_path):
    dirs = {lib: str(tmp_path / lib) for lib in LIBRARIES}
    runs = {lib: _trainer_run(LIBRARIES[lib], dirs[lib], how, bf16) for lib in LIBRARIES}
    _same(runs["genesis"], runs["torch"])
    # The Trainer saves optimizer.state_dict() with torch.save and loads it back.
    for lib in LIBRARIES:
        resumed = _trainer_run(
            genesis, str(tmp_path / f"resumed-{lib}"), how, bf16, os.path.join(dirs[lib], "checkpoint-8")
        )
        _same(resumed, runs["torch"])


# ------------------------------------------------------------------------- Accelerate
def _accelerate_run(lib, name, state_dir, resume=False):
    """24 batches through Accelerator.prepare with bf16 autocast, accumulation of 2 and
    clipping; save_state after batch 12, or load_state there and run the rest."""
    acc = accelerate.Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=2)
    accelerate.utils.set_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = getattr(lib.optim, name)(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 4, 0.8)
    x, y = _data(24 * 8)
    model, opt, sched = acc.prepare(model, opt, sched)
    first = 0
    if resume:
        acc.load_state(state_dir)
        first = 12
    for k in range(first, 24):
        with acc.accumulate(model):
            acc.backward(torch.nn.functional.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8]))
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            sched.step()
            opt.zero_grad()
        if k == 11 and not resume:
            acc.save_state(state_dir)
    return _snapshot(acc.unwrap_model(model))


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Adafactor", "NAdam"])
def test_accelerate_trains_and_resumes_as_with_torch(name, tmp_path):
    from accelerate.state import AcceleratorState

    dirs = {lib: str(tmp_path / lib) for lib in LIBRARIES}
    runs = {}
    for lib in LIBRARIES:
        runs[lib] = _accelerate_run(LIBRARIES[lib], name, dirs[lib])
        AcceleratorState._reset_state(reset_partial_state=True)
    _same(runs["genesis"], runs["torch"])
    for lib in LIBRARIES:
        resumed = _accelerate_run(genesis, name, dirs[lib], resume=True)
        AcceleratorState._reset_state(reset_partial_state=True)
        _same(resumed, runs["torch"])


# ---------------------------------------------------------------------------- Lightning
class _Module(L.LightningModule):
    def __init__(self, lib, name, manual):
        super().__init__()
        self.lib, self.name = lib, name
        self.automatic_optimization = not manual
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def training_step(self, batch, index):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if not self.automatic_optimization:  # the step runs inside Lightning's autocast here
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
            opt.step()
            self.lr_schedulers().step()
        return loss

    def configure_optimizers(self):
        if self.name == "LBFGS":
            return self.lib.optim.LBFGS(self.parameters(), lr=0.5)
        opt = getattr(self.lib.optim, self.name)(self.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.StepLR(opt, 5, 0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _lightning_run(lib, name, ckpt_dir, precision, manual=False, accumulate=1, resume=None):
    """20 optimizer steps (a checkpoint every 10) on 8 batches per epoch."""
    L.seed_everything(0, verbose=False)
    module = _Module(lib, name, manual)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, every_n_train_steps=10, save_top_k=-1, filename="{step}"
    )
    options = {}
    if not manual and name != "LBFGS":
        options = dict(gradient_clip_val=0.5, accumulate_grad_batches=accumulate)
    trainer = L.Trainer(
        max_steps=20,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        **options,
    )
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer.fit(module, loader, ckpt_path=resume)
    return _snapshot(module)


LIGHTNING_CASES = [
    ("AdamW", "32-true", False, 2),
    ("AdamW", "bf16-mixed", False, 1),
    ("AdamW", "bf16-mixed", True, 1),
    ("SGD", "16-mixed", False, 2),
    ("RMSprop", "bf16-mixed", True, 1),
    ("Adafactor", "bf16-mixed", False, 2),
    ("LBFGS", "32-true", False, 1),
]


@pytest.mark.parametrize("name, precision, manual, accumulate", LIGHTNING_CASES)
def test_lightning_trains_and_resumes_as_with_torch(name, precision, manual, accumulate, tmp_path):
    dirs = {lib: str(tmp_path / lib) for lib in LIBRARIES}
    runs = {lib: _lightning_run(LIBRARIES[lib], name, dirs[lib], precision, manual, accumulate) for lib in LIBRARIES}
    _same(runs["genesis"], runs["torch"])
    # Each resumed run writes to a directory of its own: Lightning may save over the checkpoint
    # it resumed from.
    checkpoint = {lib: os.path.join(dirs[lib], "step=10.ckpt") for lib in LIBRARIES}
    want = _lightning_run(torch, name, str(tmp_path / "t"), precision, manual, accumulate, checkpoint["torch"])
    for lib in LIBRARIES:
        got = _lightning_run(genesis, name, str(tmp_path / f"g-{lib}"), precision, manual, accumulate, checkpoint[lib])
        _same(got, want)
