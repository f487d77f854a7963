"""Convert the published MOVi-C/D/E TFDS files once into the training format of ``ocl.data.movi``.

Download a variant first (no TensorFlow needed, here or later), e.g.::

    gsutil -m cp -r gs://kubric-public/tfds/movi_c/128x128 ~/tfds/movi_c/

then::

    python scripts/convert_movi.py --variant movi_c --resolution 128 \\
        --tfds-dir ~/tfds/movi_c/128x128/1.0.0 --out data/movi_c

``--out`` is the data module's ``data.root`` (``${paths.data_root}/movi_c`` by default). An
interrupted conversion resumes where it stopped when run again with the same arguments.
Record lengths are always checksummed; with the optional ``google-crc32c`` package installed,
every record's data is checksummed too.
"""

from __future__ import annotations

import argparse
import sys

from ocl.data.errors import DataError
from ocl.data.movi import PUBLISHED_RESOLUTIONS, TFDS_SPLITS, VARIANTS
from ocl.data.movi_convert import convert_movi


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument(
        "--resolution", type=int, default=128, help=f"frame side in pixels; published: {PUBLISHED_RESOLUTIONS}"
    )
    parser.add_argument(
        "--tfds-dir", required=True, help="the downloaded <variant>/<R>x<R>/1.0.0 folder (or a parent of it)"
    )
    parser.add_argument("--out", required=True, help="output folder (data.root of the data module)")
    parser.add_argument("--splits", nargs="+", default=list(TFDS_SPLITS), choices=list(TFDS_SPLITS))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion; print the error and return 1 if the input is missing or broken."""
    args = parse_args(argv)
    try:
        counts = convert_movi(
            args.tfds_dir, args.out, args.variant, args.resolution, args.splits, progress=not args.no_progress
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for split, count in counts.items():
        print(f"{split}: {count} videos in {args.out}/{split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
