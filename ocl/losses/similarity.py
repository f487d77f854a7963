"""VideoSAUR's temporal feature-similarity loss (Zadaianchuk et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.losses.base import LossTerm
from ocl.methods.output import ModelOutput

KEYS = "keys"
"""``ModelOutput.extras`` entry: frozen encoder keys ``[B, T, N, D]`` the target is built from."""
SIMILARITY_LOGITS = "similarity_logits"
"""``ModelOutput.extras`` entry: the decoder's predicted logits ``[B, T, N, N]`` over next-frame patches."""


def similarity_targets(keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """``keys [B, T, N, D]`` -> soft targets ``[B, T-1, N, N]``: for each patch of frame ``t``,
    a distribution over the patches of frame ``t+1``.

    Keys are L2-normalised; cosine similarities below 0 are excluded (logit ``-inf``), the rest
    softmaxed at ``temperature``. A patch with no positive similarity gets an all-zero row
    (it adds nothing to the loss).
    """
    keys = F.normalize(keys.float(), dim=-1)
    affinity = torch.einsum("btnd,btmd->btnm", keys[:, :-1], keys[:, 1:])
    logits = (affinity / temperature).masked_fill(affinity < 0, float("-inf"))
    return logits.softmax(dim=-1).nan_to_num(0.0)


class TemporalFeatureSimilarity(LossTerm):
    """Soft-target cross-entropy between predicted and key-similarity distributions.

    ``L = -mean_{b, t<T-1, n} sum_m target[b,t,n,m] * log_softmax(pred[b,t,n])_m``; the last
    frame has no next frame and is dropped. Targets carry no gradient (the keys come from a
    frozen encoder).

    Args:
        temperature: softmax temperature of the targets (VideoSAUR: 0.075 MOVi, 0.25 YT-VIS
            with DINO, 0.15 with DINOv2).
        weight: loss weight (VideoSAUR: 0.1).
    """

    def __init__(self, temperature: float = 0.075, weight: float = 0.1) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if KEYS not in output.extras or SIMILARITY_LOGITS not in output.extras:
            raise ValueError(
                f"TemporalFeatureSimilarity needs output.extras[{KEYS!r}] and [{SIMILARITY_LOGITS!r}]: "
                "use a feature method with predict_similarity=true"
            )
        keys, logits = output.extras[KEYS], output.extras[SIMILARITY_LOGITS]
        if keys.shape[1] < 2:
            raise ValueError("TemporalFeatureSimilarity needs clips of at least 2 frames")
        # fp32 with autocast off: mixed precision would compute the key affinities in 16 bits.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            with torch.no_grad():
                targets = similarity_targets(keys, self.temperature)
            log_probs = logits[:, :-1].float().log_softmax(dim=-1)
            return -(targets * log_probs).sum(dim=-1).mean()
