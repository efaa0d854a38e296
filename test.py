"""Test a model: ``python test.py --dataroot ./datasets/cityscapes --name example_run
--model unpaired_revgan`` writes ./results/example_run/test_latest/index.html."""

import sys

from revgan.cli.main import main

if __name__ == "__main__":
    main(["test", *sys.argv[1:]])
