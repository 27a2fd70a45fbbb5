"""The files a segmentation run folder adds to the run folder's layout (convlab.layout names the shared ones)."""
from __future__ import annotations

CLASS_IOU = "class_iou.png"  # IoU per class on the test split, mIoU marked
WORST_IMAGES = "worst_images.png"  # the test images with the lowest IoU: image | truth | prediction overlays
