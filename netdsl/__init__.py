"""netdsl: a small language for Kubernetes network segmentation."""

__version__ = "0.1.0"
