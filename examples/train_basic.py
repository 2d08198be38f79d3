"""Basic training loop with gradient clipping and Adam.

Follows the "基本训练循环" (basic training loop) example in the "训练示例" section of the genesis
optimizer docs: zero the gradients, forward, loss, backward, ``clip_grad_norm_(max_norm=1.0)``,
``optimizer.step()``, and print the loss every few batches. The model is a small torch MLP; the
data is generated deterministically (a random "teacher" network labels Gaussian inputs), so the
example needs only torch and genesis and downloads nothing.

    python examples/train_basic.py
"""

import torch
from torch import nn

import genesis
import genesis.optim as optim

from teacher_data import batches


def main(epochs=5, log_every=4):
    torch.manual_seed(0)
    train_loader = batches()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()

    for epoch in range(epochs):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            loss.backward()
            # Gradient clipping (optional in the docs): rescale so the global norm is <= 1.
            genesis.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            if batch_idx % log_every == 0:
                print(f"Epoch: {epoch}, Batch: {batch_idx}, Loss: {loss.item():.4f}")
    return model, optimizer


if __name__ == "__main__":
    main()
