"""DINO / DINOv2 vision transformers (timm) that turn frames into patch features, frozen or fine-tuned.

:class:`ViTEncoder` returns the output tokens of one block (before the final norm, prefix tokens
dropped) and that block's attention keys: METHODS.md's ``block12`` and ``keys12``. It holds no
state besides the ViT, so a feature cache can replace the call without touching the methods.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

RANDOM = "random"
HUB = "hub"

TIMM = "timm"
"""Position embedding made for ``image_size`` once, when loaded (timm: bicubic, antialiased); other
frame sizes resample it on every call the same way."""
DINO_PER_CALL = "dino_per_call"
"""Position embedding kept at the size it was pretrained for, resampled on every call by
:func:`dino_position_embedding` (DINO's ``interpolate_pos_encoding``)."""
POSITION_INTERPOLATIONS = (TIMM, DINO_PER_CALL)


class WeightsError(RuntimeError):
    """The requested ViT weights could not be downloaded, read or matched to the model."""


@dataclass
class ViTFeatures:
    """What :class:`ViTEncoder` returns for frames ``[B, 3, H, W]``.

    Attributes:
        features: ``[B, N, D]`` output tokens of the chosen block, before the final norm,
            without the prefix (CLS, register) tokens; ``N = h * w`` in row-major order.
        keys: ``[B, N, D]`` attention keys of the same block (heads concatenated), prefix
            tokens dropped; None for features read from a frozen-feature cache that stores no
            keys (methods that do not read them).
        grid: the token grid ``(h, w) = (H / patch_size, W / patch_size)``.
    """

    features: torch.Tensor
    keys: torch.Tensor | None
    grid: tuple[int, int]


class PatchTokenGrid:
    """Token-grid helpers of an encoder with square ``patch_size`` patches, a ``model_name``, a default
    ``image_size`` and a forward pass returning :class:`ViTFeatures` (:class:`ViTEncoder`, the stand-in
    :class:`~ocl.modules.patch_features.PatchFeatureEncoder`)."""

    patch_size: int
    image_size: int
    model_name: str

    def grid_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Token grid ``(h, w)`` for frames of side ``image_size`` (int) or ``(H, W)``."""
        return patch_grid(image_size, self.patch_size, self.model_name)

    def num_tokens(self, image_size: int | tuple[int, int] | None = None) -> int:
        """Patch tokens ``N`` for frames of side ``image_size`` (int) or ``(H, W)``; default ``self.image_size``."""
        h, w = self.grid_size(self.image_size if image_size is None else image_size)
        return h * w

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 3, H, W]`` -> features as maps ``[B, D, h, w]`` (label propagation's input)."""
        encoded = self(images)
        return encoded.features.transpose(1, 2).unflatten(2, encoded.grid)


class ViTEncoder(PatchTokenGrid, nn.Module):
    """A timm ViT returning one block's patch tokens and attention keys; frozen unless ``trainable``.

    Frames in [0, 1] are normalised inside with the model's pretrained mean and std. Blocks
    after ``block`` are removed, so they never run. Frozen (the default): the parameters never
    require gradients, the forward pass runs without autograd and the module stays in eval mode
    whatever its parent's mode. Trainable (SMTC's student): the parameters require gradients, the
    forward pass records them and the module follows ``train()`` / ``eval()``, so stochastic depth
    (``drop_path_rate``) drops residual branches in training only (DINO and DINOv2 ViTs have no
    dropout at their defaults).

    Args:
        model_name: timm model name, e.g. ``vit_base_patch8_224.dino`` or
            ``vit_small_patch14_dinov2.lvd142m``.
        image_size: side of the input frames. With ``position_interpolation="timm"`` the
            position embedding is made for it (pretrained ones are resampled to it when loaded).
            Other sizes that are multiples of the patch size also work; their position embedding
            is resampled on every call.
        weights: ``"hub"`` (timm's pretrained weights from the Hugging Face hub), ``"random"``
            (no pretrained weights: tests and synthetic runs), or the path of a local file
            (.pth/.pt/.bin/.safetensors) holding a state dict in timm's format for the model or
            an original DINO / DINOv2 checkpoint.
        block: 1-based index of the block whose output and keys are returned; default the last.
        trainable: fine-tune the ViT (its parameters require gradients).
        drop_path_rate: stochastic depth of a trainable ViT in training mode: block ``i`` (0-based)
            of the architecture's ``n`` drops each residual branch of a sample with probability
            ``drop_path_rate * i / (n - 1)`` and scales kept ones by ``1 / (1 - p)`` (timm's and
            DINO's linear rule). 0: none.
        position_interpolation: ``"timm"`` (the table is resampled to ``image_size`` once, when
            loaded, with timm's antialiased bicubic interpolation, and fine-tuned at that size) or
            ``"dino_per_call"`` (the table keeps the size of the architecture's pretraining, e.g.
            14x14 for a ViT-S/16 at 224 px, is fine-tuned at that size and resampled on every call
            by :func:`dino_position_embedding`, as DINO's own ViT does).
        **timm_kwargs: passed to :func:`timm.create_model`, e.g. ``depth``, ``patch_size``,
            ``embed_dim``, ``num_heads`` for a tiny random ViT.
    """

    def __init__(
        self,
        model_name: str,
        image_size: int = 224,
        weights: str = HUB,
        block: int | None = None,
        trainable: bool = False,
        drop_path_rate: float = 0.0,
        position_interpolation: str = TIMM,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        if position_interpolation not in POSITION_INTERPOLATIONS:
            raise ValueError(
                f"unknown position_interpolation {position_interpolation!r}; choose one of {list(POSITION_INTERPOLATIONS)}"
            )
        if drop_path_rate and not trainable:
            raise ValueError("drop_path_rate needs trainable=true: a frozen ViT always runs in eval mode")
        kwargs = {"dynamic_img_size": True, **timm_kwargs, "drop_path_rate": drop_path_rate}
        if position_interpolation == TIMM:
            kwargs["img_size"] = image_size
        vit = _create_vit(model_name, weights, kwargs)
        if position_interpolation == DINO_PER_CALL:
            _check_dino_position_table(vit, model_name)
        patch_h, patch_w = vit.patch_embed.patch_size
        if patch_h != patch_w:
            raise ValueError(
                f"{model_name} has non-square patches {(patch_h, patch_w)}; only square ones are supported"
            )
        depth = len(vit.blocks)
        block = depth if block is None else block
        if not 1 <= block <= depth:
            raise ValueError(f"block must be in [1, {depth}] for {model_name}, got {block}")
        if not isinstance(getattr(vit.blocks[block - 1].attn, "qkv", None), nn.Linear):
            raise TypeError(f"{model_name} has no fused attn.qkv projection to read the attention keys from")
        vit.prune_intermediate_layers([block - 1], prune_norm=True, prune_head=True)
        vit.requires_grad_(trainable)
        self.trainable = trainable
        self.position_interpolation = position_interpolation
        self.vit = vit
        # registered once, not per call: torch.compile traces a hook that exists before compilation,
        # but not one registered inside the compiled forward (its output would never be seen)
        self._last_qkv: torch.Tensor | None = None
        vit.blocks[-1].attn.qkv.register_forward_hook(self._keep_last_qkv)
        self.model_name = model_name
        self.image_size = image_size
        self.pretrained = weights != RANDOM
        self.block = block
        self.patch_size = patch_h
        self.embed_dim: int = vit.embed_dim
        mean = torch.tensor(vit.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(vit.pretrained_cfg["std"]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.grid_size(image_size)  # raises if image_size is not a multiple of the patch size
        self.train(False)

    def cache_fingerprint(self) -> dict[str, dict[str, Any]]:
        """What this frozen encoder's features depend on, as a frozen-feature cache records it
        (:mod:`ocl.data.feature_cache`): ``encoder`` (architecture, block, position interpolation,
        a SHA-256 of the weights) and ``resolution`` (frame size and patch size)."""
        if self.trainable:
            raise ValueError(f"{self.model_name} is trainable: its features change in training and cannot be cached")
        return {
            "encoder": {
                "model_name": self.model_name,
                "block": self.block,
                "position_interpolation": self.position_interpolation,
                "weights_sha256": weights_digest(self.vit),
            },
            "resolution": {"image_size": [self.image_size, self.image_size], "patch_size": self.patch_size},
        }

    def _keep_last_qkv(self, _module: nn.Module, _inputs: Any, qkv: torch.Tensor) -> None:
        """Forward hook of the last block's ``attn.qkv``: keep its output ``[B, prefix + N, 3 D]`` for :meth:`_features`."""
        self._last_qkv = qkv

    def train(self, mode: bool = True) -> ViTEncoder:
        """Follow ``mode`` if trainable (drop path in training); a frozen encoder stays in eval mode."""
        return super().train(mode and self.trainable)

    def forward(self, images: torch.Tensor) -> ViTFeatures:
        """``images [B, 3, H, W]`` in [0, 1] -> features and keys ``[B, h * w, D]``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected frames [B, 3, H, W], got shape {tuple(images.shape)}")
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self._features(images)

    def _features(self, images: torch.Tensor) -> ViTFeatures:
        """The forward pass proper (the caller sets the autograd mode)."""
        grid = self.grid_size((images.shape[2], images.shape[3]))
        vit = self.vit
        tokens = self._embedded((images - self.mean) / self.std)
        for block in vit.blocks:
            tokens = block(tokens)
        qkv, self._last_qkv = self._last_qkv, None  # set by _keep_last_qkv during the last block
        prefix = vit.num_prefix_tokens
        keys = qkv.chunk(3, dim=-1)[1][:, prefix:].contiguous()
        return ViTFeatures(features=tokens[:, prefix:], keys=keys, grid=grid)

    def _embedded(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``images [B, 3, H, W]`` -> the first block's input ``[B, prefix + h * w, D]``:
        patch embedding, prefix tokens and position embedding (``position_interpolation``)."""
        vit = self.vit
        patches = vit.patch_embed(images)  # [B, h, w, D]
        if self.position_interpolation == TIMM:
            tokens = vit._pos_embed(patches)
        else:
            batch, height, width, dim = patches.shape
            tokens = torch.cat(
                [vit.cls_token.expand(batch, -1, -1), patches.reshape(batch, height * width, dim)], dim=1
            )
            tokens = vit.pos_drop(tokens + dino_position_embedding(vit.pos_embed, (height, width)))
        return vit.norm_pre(vit.patch_drop(tokens))


def patch_grid(image_size: int | tuple[int, int], patch_size: int, model_name: str) -> tuple[int, int]:
    """Token grid ``(h, w)`` of ``patch_size`` patches over frames of side ``image_size`` (int) or
    ``(H, W)``; ValueError naming ``model_name`` if a side is not a multiple of the patch size."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"frame size {height}x{width} is not a multiple of the patch size {patch_size} "
            f"of {model_name}; resize or crop the frames"
        )
    return height // patch_size, width // patch_size


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex, first 16 digits) of a module's state: every entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def dino_position_embedding(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding``: the position table ``[1, 1 + g * g, D]`` (class token
    first) for a token grid ``(h, w)`` -> ``[1, 1 + h * w, D]``.

    The table itself when the grid is its own ``g x g``; otherwise its ``g x g`` part is resampled
    bicubically (no antialiasing, ``align_corners=False``) with the scale factors
    ``((h + 0.1) / g, (w + 0.1) / g)``: the output has ``h x w`` positions, but source coordinates
    are ``(i + 0.5) * g / (h + 0.1) - 0.5``, not ``g / h`` apart. The class position is kept.
    """
    side = math.isqrt(table.shape[1] - 1)
    height, width = grid
    if (height, width) == (side, side):
        return table
    patches = table[:, 1:].unflatten(1, (side, side)).permute(0, 3, 1, 2)  # [1, D, g, g]
    resampled = F.interpolate(
        patches, scale_factor=((height + 0.1) / side, (width + 0.1) / side), mode="bicubic", align_corners=False
    )
    if resampled.shape[-2:] != (height, width):
        raise RuntimeError(f"DINO's interpolation gave a {tuple(resampled.shape[-2:])} grid, not {grid}")
    return torch.cat([table[:, :1], resampled.flatten(2).transpose(1, 2)], dim=1)


def _check_dino_position_table(vit: VisionTransformer, model_name: str) -> None:
    """Raise unless ``vit`` has DINO's layout: one class token whose position heads a square table."""
    table = vit.pos_embed
    positions = 0 if table is None else table.shape[1] - 1
    square = positions > 0 and math.isqrt(positions) ** 2 == positions
    if vit.cls_token is None or vit.num_prefix_tokens != 1 or vit.no_embed_class or not square:
        raise ValueError(
            f"position_interpolation='{DINO_PER_CALL}' needs DINO's layout (one class token with its position "
            f"first in a square table); {model_name} does not have it: use '{TIMM}'"
        )


def _create_vit(model_name: str, weights: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """Build ``model_name`` with ``kwargs`` and load ``weights`` (``"hub"``, ``"random"`` or a path)."""
    if weights == HUB:
        vit = _create_from_hub(model_name, kwargs)
    else:
        vit = timm.create_model(model_name, pretrained=False, **kwargs)
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"{model_name} is a {type(vit).__name__}; ViTEncoder needs a timm VisionTransformer")
    if weights not in (HUB, RANDOM):
        _load_local_weights(vit, model_name, Path(weights).expanduser())
    return vit


def _create_from_hub(model_name: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """timm's pretrained ``model_name``; a failed download raises :class:`WeightsError` with instructions."""
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except OSError as error:
        cfg = timm.models.get_pretrained_cfg(model_name)
        hub_id = cfg.hf_hub_id if cfg is not None else None
        source = f"https://huggingface.co/{hub_id} (model.safetensors)" if hub_id else "its timm pretrained source"
        original = f", or the original checkpoint {cfg.url}" if cfg is not None and cfg.url else ""
        raise WeightsError(
            f"could not download the pretrained weights of {model_name} ({type(error).__name__}: {error}). "
            f"On a machine with internet access get {source}{original}, "
            "then pass the local file as the encoder's weights: model.encoder.weights=/path/to/file "
            "(model.weights=/path/to/file where the model is the encoder alone, as model=dino_vits16)"
        ) from error


def _load_local_weights(vit: VisionTransformer, model_name: str, path: Path) -> None:
    """Load a timm-format or original DINO / DINOv2 state dict, resampling position embeddings."""
    if not path.is_file():
        raise WeightsError(f"ViT weights file not found: {path} (weights must be '{HUB}', '{RANDOM}' or a local file)")
    try:
        state = checkpoint_filter_fn(timm.models.load_state_dict(str(path)), vit)
    except Exception as error:
        raise WeightsError(f"could not read ViT weights from {path}: {error}") from error
    # ViTEncoder removes the final norm after loading, so files without it load too (the ViTs in
    # VideoSAUR's, SlotContrast's and SlotCurri's checkpoints end at the last block).
    state = {**{f"norm.{name}": value for name, value in vit.norm.state_dict().items()}, **state}
    expected = vit.state_dict()
    problems = [
        _few("missing", expected.keys() - state.keys()),
        _few("unexpected", state.keys() - expected.keys()),
        _few(
            "wrong shape",
            (
                f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
                for key in expected.keys() & state.keys()
                if state[key].shape != expected[key].shape
            ),
        ),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise WeightsError(
            f"the weights in {path} do not fit {model_name}: {'; '.join(problems)}. Expected a state dict of "
            f"timm's {model_name} (keys like 'blocks.0.attn.qkv.weight') or an original DINO / DINOv2 checkpoint"
        )
    vit.load_state_dict(state)


def _few(label: str, items: Any, shown: int = 5) -> str:
    """``"<label> (n): a, b, ..."`` listing at most ``shown`` of ``items``; empty if there are none."""
    items = sorted(items)
    if not items:
        return ""
    more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
    return f"{label} ({len(items)}): {', '.join(items[:shown])}{more}"
