"""Segmentation metrics under one evaluation protocol: FG-ARI, mBO and mIoU (video or frame)."""

from ocl.metrics.ari import fg_ari_from_contingency, frame_fg_ari, video_fg_ari
from ocl.metrics.callback import MetricsCallback
from ocl.metrics.classes import FrameFGARI, MeanBestOverlap, MeanIoU, SegmentationMetric, VideoFGARI
from ocl.metrics.overlap import (
    iou_from_contingency,
    mbo_from_contingency,
    mean_best_overlap,
    mean_iou,
    miou_from_contingency,
)
from ocl.metrics.protocol import contingency, hard_segmentation, sample_tables, segmentation_contingency

__all__ = [
    "FrameFGARI",
    "MeanBestOverlap",
    "MeanIoU",
    "MetricsCallback",
    "SegmentationMetric",
    "VideoFGARI",
    "contingency",
    "fg_ari_from_contingency",
    "frame_fg_ari",
    "hard_segmentation",
    "iou_from_contingency",
    "mbo_from_contingency",
    "mean_best_overlap",
    "mean_iou",
    "miou_from_contingency",
    "sample_tables",
    "segmentation_contingency",
    "video_fg_ari",
]
