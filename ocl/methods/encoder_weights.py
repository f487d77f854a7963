"""Pretrained frozen encoders stay out of checkpoints: they are rebuilt from the config's weights.

A ViT-B adds 340 MB to every checkpoint; its weights are already in the file ``model.encoder.weights``
names. :func:`leave_out_frozen_encoder` drops them from a checkpoint and stores a fingerprint;
:func:`put_back_frozen_encoder` checks the rebuilt encoder against it and puts its weights back.
"""

from __future__ import annotations

from typing import Any

import torch

from ocl.modules.patch_features import PatchEncoder

FINGERPRINT_KEY = "ocl_encoder_fingerprint"
"""Checkpoint key of the fingerprints: ``{module prefix: fingerprint}``."""


def encoder_fingerprint(encoder: torch.nn.Module) -> float:
    """A float64 checksum of the encoder's weights (sum of |w| weighted by position in each tensor)."""
    total = 0.0
    for tensor in encoder.state_dict().values():
        flat = tensor.detach().double().flatten()
        total += float((flat.abs() * torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)).sum())
    return total


def leave_out_frozen_encoder(checkpoint: dict[str, Any], encoder: PatchEncoder, prefix: str) -> None:
    """Drop the ``prefix`` weights (e.g. ``"encoder."``) of a pretrained, frozen ``encoder`` from
    ``checkpoint["state_dict"]`` and record its fingerprint; random or trainable encoders are kept."""
    if not encoder.pretrained or encoder.trainable:
        return
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    checkpoint.setdefault(FINGERPRINT_KEY, {})[prefix] = encoder_fingerprint(encoder)


def put_back_frozen_encoder(checkpoint: dict[str, Any], encoder: PatchEncoder, prefix: str) -> None:
    """Undo :func:`leave_out_frozen_encoder` with the rebuilt ``encoder``; ValueError if its weights
    are not those the checkpoint was trained with."""
    stored = checkpoint.get(FINGERPRINT_KEY, {}).get(prefix)
    if stored is None:
        return
    if abs(stored - encoder_fingerprint(encoder)) > 1e-6 * abs(stored):
        raise ValueError(
            f"the encoder weights loaded from model.encoder.weights ({encoder.model_name}) differ from "
            "those the checkpoint was trained with; pass the same weights file (or 'hub') as in training"
        )
    checkpoint["state_dict"].update({prefix + k: v for k, v in encoder.state_dict().items()})
