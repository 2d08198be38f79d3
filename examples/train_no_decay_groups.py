"""AdamW without weight decay on biases and normalisation parameters.

Follows the AdamW usage example "从权重衰减中排除偏置和归一化" (exclude biases and norms from
weight decay) in the genesis optimizer docs: ``model.named_parameters()`` is split by name --
any parameter whose name contains ``'bias'``, ``'norm'`` or ``'ln'`` goes to a group with
``weight_decay=0.0``, the rest to a group with ``weight_decay=0.01`` -- and both groups are
handed to ``optim.AdamW(..., lr=1e-4)``. The model has a LayerNorm (``norm``) so that group is
not empty. Deterministically generated data (nothing is downloaded).

    python examples/train_no_decay_groups.py
"""

import torch
from torch import nn

import genesis.optim as optim

from teacher_data import batches


class MLP(nn.Module):
    def __init__(self, features=16, hidden=64, classes=4):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def main(epochs=4, lr=1e-3):
    # The docs use lr=1e-4 (a fine-tuning rate); 1e-3 makes the short demo visibly learn.
    torch.manual_seed(0)
    train_loader = batches()
    model = MLP()

    decay_params = []
    no_decay_params = []
    for name, param in model.named_parameters():
        if any(nd in name for nd in ["bias", "norm", "ln"]):
            no_decay_params.append(param)
        else:
            decay_params.append(param)
    print(f"decay: {len(decay_params)} tensors, no decay: {len(no_decay_params)} tensors")

    optimizer = optim.AdamW(
        [
            {"params": decay_params, "weight_decay": 0.01},
            {"params": no_decay_params, "weight_decay": 0.0},
        ],
        lr=lr,
    )

    for epoch in range(epochs):
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % 8 == 0:
                print(f"Epoch: {epoch}, Batch: {batch_idx}, Loss: {loss.item():.4f}")
    return model, optimizer


if __name__ == "__main__":
    main()
