"""Learning-rate scheduling: AdamW with CosineAnnealingLR.

Follows the "学习率调度" (learning-rate scheduling) example in the "训练示例" section of the
genesis optimizer docs: ``AdamW(lr=1e-3)`` with ``CosineAnnealingLR(optimizer, T_max, eta_min=1e-6)``,
``scheduler.step()`` once per epoch, printing the epoch and the learning rate. Here ``T_max`` is
the number of epochs, so the rate falls from 1e-3 to ``eta_min`` over the run. Small torch MLP,
deterministically generated data (nothing is downloaded).

    python examples/train_scheduler.py
"""

import torch
from torch import nn

import genesis.optim as optim
from genesis.optim.lr_scheduler import CosineAnnealingLR

from teacher_data import batches


def compute_loss(model, batch):
    data, target = batch
    return nn.functional.cross_entropy(model(data), target)


def main(epochs=10):
    torch.manual_seed(0)
    train_loader = batches()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))

    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = CosineAnnealingLR(optimizer, T_max=epochs, eta_min=1e-6)

    for epoch in range(epochs):
        total = 0.0
        for batch in train_loader:
            optimizer.zero_grad()
            loss = compute_loss(model, batch)
            loss.backward()
            optimizer.step()
            total += loss.item()
        # Update the learning rate once per epoch.
        scheduler.step()
        print(f"Epoch {epoch}, LR: {scheduler.get_last_lr()[0]:.6f}, Loss: {total / len(train_loader):.4f}")
    return model, optimizer, scheduler


if __name__ == "__main__":
    main()
