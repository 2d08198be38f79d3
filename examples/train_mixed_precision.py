"""Mixed-precision training with autocast, a GradScaler, gradient clipping and AdamW.

Follows the "混合精度的高级训练" (advanced mixed-precision training) example of the genesis
optimizer docs: ``genesis.enable_autocast = True``; per batch zero the gradients, run the forward
pass and the loss under ``with genesis.autocast():`` (bfloat16 on the CPU, float16 on CUDA),
backward, ``clip_grad_norm_(max_norm=1.0)`` and ``optimizer.step()`` with AdamW
(weight_decay=0.01). As in torch's AMP recipe, the loss goes through ``genesis.amp.GradScaler``:
``scaler.scale(loss).backward()``, ``scaler.unscale_(optimizer)`` before clipping (so the norm is
that of the true gradients), then ``scaler.step(optimizer)`` and ``scaler.update()``. The docs'
lr of 5e-5 suits fine-tuning a pretrained transformer; this short run from scratch uses 2e-3.

The model is a tiny transformer-style network (a pre-norm feed-forward block with a residual
connection) in torch; the data is generated deterministically (a random "teacher" network labels
Gaussian inputs), so the example needs only torch and genesis and downloads nothing.

    python examples/train_mixed_precision.py
"""

import torch
from torch import nn

import genesis
import genesis.optim as optim

from teacher_data import batches


class TinyTransformerBlockModel(nn.Module):
    """Embed, one pre-norm feed-forward block with a residual connection (the MLP half of a
    transformer layer), a final LayerNorm and a classification head."""

    def __init__(self, features=16, width=64, hidden=128, classes=4):
        super().__init__()
        self.embed = nn.Linear(features, width)
        self.block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.block(h)
        return self.head(self.norm(h))


def main(steps=160, log_every=16):
    # Enable mixed precision: genesis.autocast() regions now run torch.autocast.
    genesis.enable_autocast = True

    torch.manual_seed(0)
    train_loader = batches(as_dicts=True)
    model = TinyTransformerBlockModel()
    optimizer = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    scaler = genesis.amp.GradScaler()
    criterion = nn.CrossEntropyLoss()

    model.train()
    for step in range(steps):
        batch = train_loader[step % len(train_loader)]
        optimizer.zero_grad()
        # Mixed-precision forward pass: the matrix products run in bfloat16 on the CPU.
        with genesis.autocast():
            outputs = model(batch["input"])
            loss = criterion(outputs, batch["target"])
        # Backward on the scaled loss, so small low-precision gradients do not underflow.
        scaler.scale(loss).backward()
        # Clip the true (unscaled) gradients to a global norm of at most 1.
        scaler.unscale_(optimizer)
        genesis.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        # Update (skipped if a gradient is inf/NaN), then adapt the scale.
        scaler.step(optimizer)
        scaler.update()
        if step % log_every == 0:
            print(f"Step: {step}, Loss: {loss.item():.4f}, Scale: {scaler.get_scale():.0f}")
    return model, optimizer, scaler


if __name__ == "__main__":
    main()
