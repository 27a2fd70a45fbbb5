"""Training: the loop, its callbacks, optimizers and schedules, and the run-producing `train`."""
from .session import train

__all__ = ["train"]
