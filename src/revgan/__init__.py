"""revgan: memory-efficient image-to-image translation in 2D and 3D with reversible GANs."""

__version__ = "0.1.0"
