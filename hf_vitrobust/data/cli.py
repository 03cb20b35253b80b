"""``python -m hf_vitrobust.data --check-fashion-mnist`` (used by ``make install``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hf_vitrobust.data.sources import FASHION_MNIST_ENV, find_fashion_mnist_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_vitrobust.data --check-fashion-mnist``: exit 0 when the files are there."""
    parser = argparse.ArgumentParser(prog="python -m hf_vitrobust.data", description=__doc__)
    parser.add_argument(
        "--check-fashion-mnist",
        action="store_true",
        help="Print the Fashion-MNIST folder and exit 0, or explain and exit 1 when absent.",
    )
    args = parser.parse_args(argv)
    if args.check_fashion_mnist:
        folder = find_fashion_mnist_dir()
        if folder is None:
            print(
                "Fashion-MNIST files not found: install Debian's dataset-fashion-mnist or set "
                f"{FASHION_MNIST_ENV} to a folder holding "
                "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.",
                file=sys.stderr,
            )
            return 1
        print(folder)
        return 0
    parser.print_help()
    return 0


__all__ = ["main"]
