"""Train a model: ``python train.py --dataroot ./datasets/cityscapes --name example_run
--model unpaired_revgan`` (the reference's flags; see ``--help``)."""

import sys

from revgan.cli.main import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
