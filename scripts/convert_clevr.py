"""Convert DeepMind's CLEVR (with masks) TFRecord file once into the training format of ``ocl.data.clevr``.

Download the file first (about 10 GB; no TensorFlow needed, here or later)::

    gsutil cp gs://multi-object-datasets/clevr_with_masks/clevr_with_masks_train.tfrecords ~/clevr/

then, for CLEVR6 (images with at most 6 objects; 10 keeps all: CLEVR10)::

    python scripts/convert_clevr.py --tfrecord ~/clevr/clevr_with_masks_train.tfrecords \\
        --out data/clevr6 --max-objects 6

``--out`` is the data module's ``data.root`` (``${paths.data_root}/clevr6`` by default). Splits
are taken by record position before filtering: the first 70000 records train, the next 15000
val, the rest test. The file is one GZIP stream, so it is read once from start to end; an
interrupted conversion resumes (images already written are kept) when run again with the
same arguments.
"""

from __future__ import annotations

import argparse
import sys

from ocl.data.clevr_convert import TRAIN_SIZE, VAL_SIZE, convert_clevr
from ocl.data.errors import DataError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tfrecord", required=True, help="the downloaded clevr_with_masks_train.tfrecords")
    parser.add_argument("--out", required=True, help="output folder (data.root of the data module)")
    parser.add_argument(
        "--max-objects", type=int, default=6, help="keep images with at most this many objects (6: CLEVR6, 10: all)"
    )
    parser.add_argument("--train-size", type=int, default=TRAIN_SIZE, help="records (before filtering) of train")
    parser.add_argument("--val-size", type=int, default=VAL_SIZE, help="records (before filtering) of val, after train")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion; print the error and return 1 if the input is missing or broken."""
    args = parse_args(argv)
    try:
        counts = convert_clevr(
            args.tfrecord, args.out, args.max_objects, args.train_size, args.val_size, progress=not args.no_progress
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for split, count in counts.items():
        print(f"{split}: {count} images in {args.out}/{split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
