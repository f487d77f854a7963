"""VideoSAUR's temporal feature-similarity loss (Zadaianchuk et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm
from ocl.utils.precision import at_least_float32

KEYS = "keys"
"""``ModelOutput.extras`` entry: frozen encoder keys ``[B, T, N, D]`` the target is built from."""
SIMILARITY_LOGITS = "similarity_logits"
"""``ModelOutput.extras`` entry: the decoder's predicted logits ``[B, T, N, N]`` over next-frame patches."""


UNMATCHED_ROWS = ("uniform", "ignore")


def similarity_targets(keys: torch.Tensor, temperature: float, unmatched_rows: str = "uniform") -> torch.Tensor:
    """``keys [B, T, N, D]`` -> soft targets ``[B, T-1, N, N]``: for each patch of frame ``t``,
    a distribution over the patches of frame ``t+1``.

    Keys are L2-normalised; cosine similarities below 0 are excluded (logit ``-inf``), the rest
    softmaxed at ``temperature``. A patch whose similarities are all negative gets, with
    ``unmatched_rows="uniform"``, the uniform distribution ``1/N`` (VideoSAUR's code: its all
    ``-inf`` row is set to zeros before the softmax) or, with ``"ignore"``, an all-zero row (it
    adds nothing to the loss). Computed in the keys' precision, at least float32.
    """
    if unmatched_rows not in UNMATCHED_ROWS:
        raise ValueError(f"unknown unmatched_rows {unmatched_rows!r}; choose one of {list(UNMATCHED_ROWS)}")
    keys = F.normalize(at_least_float32(keys), dim=-1)
    affinity = torch.einsum("btnd,btmd->btnm", keys[:, :-1], keys[:, 1:])
    excluded = affinity < 0
    logits = (affinity / temperature).masked_fill(excluded, float("-inf"))
    unmatched = excluded.all(dim=-1, keepdim=True)
    if unmatched_rows == "uniform":
        return logits.masked_fill(unmatched, 0.0).softmax(dim=-1)
    return logits.softmax(dim=-1).masked_fill(unmatched, 0.0)


class TemporalFeatureSimilarity(LossTerm):
    """Soft-target cross-entropy between predicted and key-similarity distributions.

    ``L = -mean_{b, t<T-1, n} sum_m target[b,t,n,m] * log_softmax(pred[b,t,n])_m``; the last
    frame has no next frame and is dropped. Targets carry no gradient (the keys come from a
    frozen encoder).

    Args:
        temperature: softmax temperature of the targets (VideoSAUR: 0.075 MOVi, 0.25 YT-VIS
            with DINO, 0.15 with DINOv2).
        weight: loss weight (VideoSAUR: 0.1).
        unmatched_rows: target of a patch with no positive similarity to the next frame:
            ``uniform`` (VideoSAUR's code) or ``ignore`` (a zero row); see :func:`similarity_targets`.
    """

    def __init__(self, temperature: float = 0.075, weight: float = 0.1, unmatched_rows: str = "uniform") -> None:
        super().__init__(weight)
        if unmatched_rows not in UNMATCHED_ROWS:
            raise ValueError(f"unknown unmatched_rows {unmatched_rows!r}; choose one of {list(UNMATCHED_ROWS)}")
        self.temperature = temperature
        self.unmatched_rows = unmatched_rows

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if KEYS not in output.extras or SIMILARITY_LOGITS not in output.extras:
            raise ValueError(
                f"TemporalFeatureSimilarity needs output.extras[{KEYS!r}] and [{SIMILARITY_LOGITS!r}]: "
                "use a feature method with predict_similarity=true"
            )
        keys, logits = output.extras[KEYS], output.extras[SIMILARITY_LOGITS]
        if keys.shape[1] < 2:
            raise ValueError("TemporalFeatureSimilarity needs clips of at least 2 frames")
        # at least fp32 with autocast off: mixed precision would compute the key affinities in 16 bits.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            with torch.no_grad():
                targets = similarity_targets(keys, self.temperature, self.unmatched_rows)
            log_probs = at_least_float32(logits[:, :-1]).log_softmax(dim=-1)
            return -(targets * log_probs).sum(dim=-1).mean()
