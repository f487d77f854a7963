"""Named, weighted loss terms chosen in config (``loss.<name>.weight``)."""

from ocl.losses.base import LossTerm
from ocl.losses.contrastive import SlotSlotContrastive
from ocl.losses.cycle import FeatureSlotFeatureCycle, SlotFeatureSlotCycle
from ocl.losses.points import PointSupervision
from ocl.losses.reconstruction import ReconstructionMSE
from ocl.losses.similarity import TemporalFeatureSimilarity
from ocl.losses.ssim3d import StructureSSIM3D

__all__ = [
    "FeatureSlotFeatureCycle",
    "LossTerm",
    "PointSupervision",
    "ReconstructionMSE",
    "SlotFeatureSlotCycle",
    "SlotSlotContrastive",
    "StructureSSIM3D",
    "TemporalFeatureSimilarity",
]
