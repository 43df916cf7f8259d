"""fastseg: fast, exact customer segmentation."""

__version__ = "0.1.0"
