"""Instance segmentation: a mask, a box and a class for every object (Mask R-CNN), on detection's machinery."""
