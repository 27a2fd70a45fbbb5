"""convlab.scratch: a CNN engine written by hand in NumPy, forward and backward, checked against PyTorch.

Imports nothing but NumPy and the standard library. `functional` holds the forward/backward pairs,
`reference` the slow nested-loop versions, `nn` the torch.nn-named layers, `optim` the optimizers,
`models` the presets' model classes, `gradcheck` finite differences and `explain` the step-by-step traces.
"""
from . import functional, gradcheck, models, nn, optim, reference  # noqa: F401
