"""Training: the loop, its callbacks, optimizers, schedules and device choice."""
from .loop import fit

__all__ = ["fit"]
