"""Generators trained elsewhere (pytorch-CycleGAN-and-pix2pix, the original RevGAN) as
revgan run folders: :func:`revgan.interop.importer.import_checkpoints`."""
