"""The environment of a child interpreter playing a NumPy-only install: genesis then neither
imports torch nor derives from torch.optim.Optimizer (GENESIS_NO_TORCH, genesis/optim/_base.py),
exactly as where torch is not installed."""

import os

NO_TORCH_ENV = dict(os.environ, GENESIS_NO_TORCH="1")
