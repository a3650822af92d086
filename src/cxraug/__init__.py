"""cxraug: class-conditional GAN augmentation for imbalanced chest X-ray classification."""

__version__ = "0.1.0"
