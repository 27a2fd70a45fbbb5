"""Training: the loop, its callbacks, optimizers, schedules and device choice."""

__all__ = ["fit"]


def __getattr__(name: str):
    """`fit` imports torch on first use, so the CLI reads training/resume.py for its help without torch."""
    if name == "fit":
        from .loop import fit  # lazy: start-up time

        return fit
    raise AttributeError(f"module 'convlab.training' has no attribute {name!r}")
