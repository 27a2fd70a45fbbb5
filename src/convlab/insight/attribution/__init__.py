"""Attribution methods (saliency, Grad-CAM(++), IG, SmoothGrad, occlusion, LIME, KernelSHAP, LRP) and their scores."""
from . import methods  # noqa: F401  (registers the methods)
from .attribute import Attributions, attribute
from .registry import METHODS, Method, Settings, parse_methods

__all__ = ["METHODS", "Attributions", "Method", "Settings", "attribute", "parse_methods"]
