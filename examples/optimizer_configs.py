"""Every SGD / Adam / AdamW configuration from the docs' usage examples, each trained briefly.

Follows the "使用示例" (usage examples) blocks of ``optim.SGD``, ``optim.Adam`` and
``optim.AdamW`` in the genesis optimizer docs, with their hyperparameters unchanged: plain SGD,
momentum, weight decay, Nesterov, per-layer learning rates (``features`` / ``classifier``);
default Adam, custom lr, Transformer betas/eps, weight decay, fine-tuning rates per part
(``encoder`` / ``decoder`` / ``head``), AMSGrad; default AdamW, the BERT/GPT setting and the
large-model setting. Each configuration trains the same small torch model from the same start
on the same deterministically generated data (full batch) and prints its first and last loss.
The small fine-tuning rates (1e-5 .. 1e-4) move the loss only a little in a short run.

    python examples/optimizer_configs.py
"""

import torch
from torch import nn

import genesis.optim as optim

from teacher_data import teacher_data


class Net(nn.Module):
    """A small MLP whose parts carry the names the docs' examples use."""

    def __init__(self, features=16, hidden=32, classes=4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(features, hidden), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, classes)

    # SGD's per-layer example calls the body "features" and the output layer "classifier".
    @property
    def features(self):
        return nn.Sequential(self.encoder, self.decoder)

    @property
    def classifier(self):
        return self.head

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


CONFIGS = {
    # optim.SGD
    "SGD basic": lambda m: optim.SGD(m.parameters(), lr=0.01),
    "SGD momentum": lambda m: optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
    "SGD momentum + weight decay": lambda m: optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4),
    "SGD nesterov": lambda m: optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True),
    "SGD per-layer lr": lambda m: optim.SGD(
        [
            {"params": m.features.parameters(), "lr": 0.001},
            {"params": m.classifier.parameters(), "lr": 0.01},
        ],
        momentum=0.9,
    ),
    # optim.Adam
    "Adam default": lambda m: optim.Adam(m.parameters()),
    "Adam lr=0.001": lambda m: optim.Adam(m.parameters(), lr=0.001),
    "Adam transformer": lambda m: optim.Adam(m.parameters(), lr=0.0001, betas=(0.9, 0.98), eps=1e-9),
    "Adam weight decay": lambda m: optim.Adam(m.parameters(), lr=0.001, weight_decay=1e-5),
    "Adam fine-tuning groups": lambda m: optim.Adam(
        [
            {"params": m.encoder.parameters(), "lr": 1e-5},
            {"params": m.decoder.parameters(), "lr": 1e-4},
            {"params": m.head.parameters(), "lr": 1e-3},
        ]
    ),
    "Adam amsgrad": lambda m: optim.Adam(m.parameters(), lr=0.001, amsgrad=True),
    # optim.AdamW
    "AdamW default": lambda m: optim.AdamW(m.parameters()),
    "AdamW BERT/GPT": lambda m: optim.AdamW(m.parameters(), lr=5e-5, weight_decay=0.01),
    "AdamW large model": lambda m: optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1),
}


def train(make_optimizer, x, y, steps):
    torch.manual_seed(0)  # every configuration starts from the same weights
    model = Net()
    optimizer = make_optimizer(model)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(steps=100):
    x, y = teacher_data(n=256)
    results = {}
    for name, make_optimizer in CONFIGS.items():
        losses = train(make_optimizer, x, y, steps)
        results[name] = losses
        print(f"{name:28s} first loss {losses[0]:.6f}  last loss {losses[-1]:.6f}")
    return results


if __name__ == "__main__":
    main()
