"""Object detection, convlab's second task: boxes and their formats, detectors, COCO metrics, figures."""
