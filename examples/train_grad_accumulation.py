"""Gradient accumulation: simulate a 4x larger batch.

Follows the "梯度累积" (gradient accumulation) example in the "训练示例" section of the genesis
optimizer docs: ``accumulation_steps = 4``; each batch's loss is divided by 4 before
``backward()`` so the gradients add up to the mean over the 4 batches; every 4th batch the
gradients are clipped (``max_norm=1.0``), ``optimizer.step()`` runs and the gradients are
cleared. Small torch MLP, deterministically generated data (nothing is downloaded).

    python examples/train_grad_accumulation.py
"""

import torch
from torch import nn

import genesis
import genesis.optim as optim

from teacher_data import batches


def main(epochs=3, accumulation_steps=4):
    torch.manual_seed(0)
    train_loader = batches(batch_size=8, as_dicts=True)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = optim.Adam(model.parameters(), lr=0.003)
    criterion = nn.CrossEntropyLoss()

    updates = 0
    for epoch in range(epochs):
        optimizer.zero_grad()
        accumulated = 0.0
        for i, batch in enumerate(train_loader):
            outputs = model(batch["input"])
            loss = criterion(outputs, batch["target"])
            # Normalise by the number of accumulated batches.
            loss = loss / accumulation_steps
            loss.backward()
            accumulated += loss.item()

            # Update the weights every accumulation_steps batches.
            if (i + 1) % accumulation_steps == 0:
                genesis.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
                optimizer.zero_grad()
                updates += 1
                if updates % 4 == 0:
                    # `accumulated` is the mean loss over the effective (4x) batch.
                    print(f"Epoch {epoch}, update {updates}, Loss: {accumulated:.4f}")
                accumulated = 0.0
    return model, optimizer


if __name__ == "__main__":
    main()
