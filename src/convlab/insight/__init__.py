"""Seeing inside a run: Grad-CAM, feature maps, the HTML report and hyperparameter search."""
