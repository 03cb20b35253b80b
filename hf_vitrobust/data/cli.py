"""``python -m hf_vitrobust.data``: pre-flight checks of data.

    python -m hf_vitrobust.data --check DATASET [--split S] [--image_column C] ...
    python -m hf_vitrobust.data --check-fashion-mnist      (used by ``make install``)

``--check`` decodes every image of a split and lists the undecodable files (path and reason)
and their fraction; the exit code is 1 when the fraction is above ``--max_bad_fraction`` (the
limit a training run with the same value would stop at), 2 when the dataset cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hf_vitrobust.data.check import scan_dataset
from hf_vitrobust.data.sources import FASHION_MNIST_ENV, find_fashion_mnist_dir
from hf_vitrobust.io import write_json_atomic


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vitrobust.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check-fashion-mnist",
        action="store_true",
        help="Print the Fashion-MNIST folder and exit 0, or explain and exit 1 when absent.",
    )
    parser.add_argument(
        "--check",
        metavar="DATASET",
        help="Scan a dataset (Hub id, imagefolder, parquet/arrow files, fashion_mnist) for "
        "images that cannot be decoded.",
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--streaming", action="store_true", help="Stream the dataset.")
    parser.add_argument(
        "--max_examples", type=int, default=None, help="Scan a stratified random sample only."
    )
    parser.add_argument("--max_bad_fraction", type=float, default=0.01)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0, help="Parallel decoding workers.")
    parser.add_argument("--json", metavar="FILE", help="Also write the findings as JSON.")
    parser.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return parser


def _check_fashion_mnist() -> int:
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


def _check(args: argparse.Namespace) -> int:
    try:
        tracker, bad = scan_dataset(
            args.check,
            args.split,
            image_column=args.image_column,
            label_column=args.label_column,
            config_name=args.dataset_config_name,
            streaming=args.streaming or None,
            max_examples=args.max_examples,
            max_bad_fraction=args.max_bad_fraction,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as error:  # missing path, Hub unreachable, wrong column
        print(f"error: {error}", file=sys.stderr)
        return 2
    for example_id, item in bad.items():
        print(f"bad  id {example_id}  {item.path or '(in-memory bytes)'}  {item.reason}")
    summary = tracker.summary()
    verdict = "OK" if summary["passed"] else "TOO MANY BAD IMAGES"
    print(
        f"{args.check} [{args.split}]: {summary['bad']} of {summary['seen']} images could not be "
        f"decoded ({summary['fraction']:.2%}; limit {summary['limit']:.2%}): {verdict}"
    )
    if args.json:
        findings = {
            "dataset": args.check,
            "split": args.split,
            **summary,
            "bad_files": [
                {"id": i, "path": item.path, "reason": item.reason} for i, item in bad.items()
            ],
        }
        write_json_atomic(findings, args.json)
    return 0 if summary["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check_fashion_mnist:
        return _check_fashion_mnist()
    if args.check:
        return _check(args)
    parser.print_help()
    return 0


__all__ = ["main"]
