"""The authors' released checkpoints in ocl's layout: their key maps as data
(:mod:`ocl.published.layouts`) and one converter (:mod:`ocl.published.convert`).

``scripts/import_checkpoint.py`` builds a recipe's model, converts a released file with these and
writes an ocl checkpoint that ``eval.py`` and ``predict.py`` run as any other.
"""

from ocl.published.convert import LayoutMismatch, NameMap, convert_state_dict, their_state_dict, their_vit_weights
from ocl.published.layouts import LAYOUTS, Layout, Rename

__all__ = [
    "LAYOUTS",
    "Layout",
    "LayoutMismatch",
    "NameMap",
    "Rename",
    "convert_state_dict",
    "their_state_dict",
    "their_vit_weights",
]
