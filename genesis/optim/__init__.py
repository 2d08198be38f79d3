"""genesis.optim: fused optimizers with torch.optim's interface."""

from . import lr_scheduler
from ._rules import rule_classes
from .lbfgs import LBFGS
from .muon import Muon
from .optimizer import Optimizer
from .sparse_adam import SparseAdam

# SGD, Adam, AdamW, RMSprop, ...: the classes of every element-wise rule of the core, each
# defined in its module genesis/optim/<rule>.py (see _rules.py).
globals().update(rule_classes())

__all__ = ["Optimizer", *rule_classes(), "LBFGS", "Muon", "SparseAdam", "lr_scheduler"]
