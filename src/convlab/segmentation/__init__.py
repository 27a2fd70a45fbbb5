"""Image segmentation: a class for every pixel (semantic) and a mask for every object (instance)."""
