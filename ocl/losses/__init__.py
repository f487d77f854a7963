"""Named, weighted loss terms chosen in config (``loss.<name>.weight``)."""

from ocl.losses.base import LossTerm
from ocl.losses.reconstruction import ReconstructionMSE

__all__ = ["LossTerm", "ReconstructionMSE"]
