"""genesis.nn: the parameter holder and gradient utilities."""

from . import utils
from .parameter import Parameter

__all__ = ["Parameter", "utils"]
