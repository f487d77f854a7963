"""Where the weights sit in the authors' released files and what ocl calls them, one :class:`Layout`
per ``--from`` family. Every key and shape of each family's files is listed in
``tests/fixtures/golden/checkpoints/*.json`` (README there, "Checkpoint layouts").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rename:
    """One name map between the authors' state dict and ocl's.

    Both sides are dotted names. ``{n}`` stands for a layer number (the same on both sides);
    ``{last}`` (ocl's side only) for the highest layer number under that path in the ocl model.
    A template ending in ``.`` maps every key under it (the rest of the key is kept as is);
    otherwise it maps that one key.
    """

    theirs: str
    ours: str


@dataclass(frozen=True)
class Layout:
    """How one family's released files are laid out.

    Attributes:
        name: the family's ``--from`` name.
        title: the method and its code, for messages.
        container: the key of the file's top-level dict that holds the state dict.
        renames: their names -> ocl's, tried in order; the first that matches a key maps it.
        encoder: the key prefix of the ViT in their files (timm's names follow it); None: no ViT.
        position_tables: ocl keys of ViT position embeddings -> their number of prefix (CLS)
            tokens; a table made for another square grid is resampled to the model's as timm's
            weight loader does (bicubic, antialiased, in float32).
        value_maps: ocl keys -> the name of the function their value goes through
            (:data:`ocl.published.convert.VALUE_MAPS`), where ocl stores another quantity.
        unused: their keys (templates) that nothing in their model's forward reads; ocl has no
            place for them and leaves them out.
        copies: ``(ocl prefix, ocl prefix)``: parts their files do not hold, filled with the
            converted values of the second part.
        kept: prefixes of ocl keys their files do not hold that keep the built model's values.
    """

    name: str
    title: str
    container: str
    renames: tuple[Rename, ...]
    encoder: str | None
    position_tables: tuple[tuple[str, int], ...] = ()
    value_maps: tuple[tuple[str, str], ...] = ()
    unused: tuple[str, ...] = ()
    copies: tuple[tuple[str, str], ...] = ()
    kept: tuple[str, ...] = ()


# --- the parts VideoSAUR, SlotContrast and SlotCurri share -----------------------------------
# Each of their modules sits in a wrapper (MapOverTime / ScanOverTime), hence ".module.".

_TIMM_VIT = "encoder.module.backbone.model."
"""The frozen timm ViT, cut after block 12 by torchvision's feature extractor (no final ``norm``)."""

_ENCODER = (
    Rename(_TIMM_VIT, "encoder.vit."),
    # LayerNorm, Linear FEAT -> 2 FEAT, ReLU, Linear 2 FEAT -> D: ocl's TokenMLP, same indices
    Rename("encoder.module.output_transform.layers.", "token_mlp.layers."),
)
_CORRECTOR = (  # slot attention (golden fixtures slot_attention_*)
    Rename("processor.module.corrector.norm_features.", "processor.corrector.norm_inputs."),
    Rename("processor.module.corrector.mlp.layers.", "processor.corrector.mlp."),
    Rename("processor.module.corrector.", "processor.corrector."),
)
_PREDICTOR = (  # one pre-LN transformer block (golden fixture predictor_transformer)
    Rename("processor.module.predictor.blocks.0.self_attn.qkv.", "processor.predictor.qkv."),
    Rename("processor.module.predictor.blocks.0.self_attn.out_proj.", "processor.predictor.proj."),
    Rename("processor.module.predictor.blocks.0.norm1.", "processor.predictor.norm_attention."),
    Rename("processor.module.predictor.blocks.0.norm2.", "processor.predictor.norm_ffn."),
    Rename("processor.module.predictor.blocks.0.linear1.", "processor.predictor.ffn.0."),
    Rename("processor.module.predictor.blocks.0.linear2.", "processor.predictor.ffn.2."),
)
_SLOT_MIXER = (  # VideoSAUR's decoder (golden fixtures decoder_slotmixer_*)
    Rename("decoder.module.pos_emb", "decoder.position"),
    Rename("decoder.module.allocator.blocks.{n}.self_attn.qkv.", "decoder.allocator.{n}.qkv."),
    Rename("decoder.module.allocator.blocks.{n}.self_attn.out_proj.", "decoder.allocator.{n}.proj."),
    Rename("decoder.module.allocator.blocks.{n}.norm1.", "decoder.allocator.{n}.norm_attention."),
    Rename("decoder.module.allocator.blocks.{n}.norm2.", "decoder.allocator.{n}.norm_ffn."),
    Rename("decoder.module.allocator.blocks.{n}.linear1.", "decoder.allocator.{n}.ffn.0."),
    Rename("decoder.module.allocator.blocks.{n}.linear2.", "decoder.allocator.{n}.ffn.2."),
    Rename("decoder.module.norm_q.", "decoder.norm_queries."),
    Rename("decoder.module.norm_k.", "decoder.norm_slots."),
    # their renderer's Linear layers then its output Linear = ocl's one render stack
    Rename("decoder.module.output_transform.", "decoder.render.{last}."),
    Rename("decoder.module.renderer.layers.", "decoder.render."),
    Rename("decoder.module.", "decoder."),  # to_q, to_k, norm_memory
)
_MLP_DECODER = (  # SlotContrast's and SlotCurri's decoder (golden fixture decoder_mlp)
    Rename("decoder.module.pos_emb", "decoder.position"),
    Rename("decoder.module.mlp.layers.", "decoder.mlp."),
)
_DINO_POSITIONS = (("encoder.vit.pos_embed", 1),)
"""DINO and DINOv2 ViTs: one CLS token before the patch positions, no register tokens."""

VIDEOSAUR = Layout(
    name="videosaur",
    title="VideoSAUR (martius-lab/videosaur)",
    container="state_dict",  # a Lightning .ckpt
    renames=(
        Rename("initializer.mean", "processor.initialiser.mu"),
        Rename("initializer.log_std", "processor.initialiser.log_sigma"),
        *_ENCODER,
        *_CORRECTOR,
        *_PREDICTOR,
        *_SLOT_MIXER,
    ),
    encoder=_TIMM_VIT,
    position_tables=_DINO_POSITIONS,
)
SLOTCONTRAST = Layout(
    name="slotcontrast",
    title="SlotContrast (martius-lab/slotcontrast)",
    container="state_dict",  # a Lightning .ckpt
    renames=(
        Rename("initializer.slots", "processor.initialiser.slots"),
        *_ENCODER,
        *_CORRECTOR,
        *_PREDICTOR,
        *_MLP_DECODER,
    ),
    encoder=_TIMM_VIT,
    position_tables=_DINO_POSITIONS,
)
SLOTCURRI = Layout(
    name="slotcurri",
    title="SlotCurri (wjun0830/SlotCurri)",
    container="state_dict",  # a Lightning .ckpt (+ the AMP scaler); SlotContrast's keys
    renames=SLOTCONTRAST.renames,
    encoder=_TIMM_VIT,
    position_tables=_DINO_POSITIONS,
)


# --- SMTC: the student of src/model/model_twostage.py, in a plain torch.save dict -------------

SMTC = Layout(
    name="smtc",
    title="SMTC (shvdiwnkozbw/SMTC)",
    container="model_state_dict",
    renames=(
        Rename("encoder.", "encoder.vit."),  # DINO ViT-S/16, fine-tuned: DINO's names are timm's
        Rename("transport_proj.", "head.fusion.project."),
        Rename("slot_attention.slots_mu", "head.attention.mu"),  # [1, S, 1, d] -> [S, d]
        Rename("slot_attention.slots_sigma", "head.attention.log_sigma"),  # used as exp(sigma)
        Rename("slot_attention.norm_input.", "head.attention.corrector.norm_inputs."),
        Rename("slot_attention.norm_slots.", "head.attention.corrector.norm_slots."),
        Rename("slot_attention.project_q.", "head.attention.corrector.to_q."),
        Rename("slot_attention.project_k.", "head.attention.corrector.to_k."),
        Rename("slot_attention.project_v.", "head.attention.corrector.to_v."),
        # their residual MLP: norm_pre_ff, then mlp = Linear, ReLU, Linear; ocl's: one Sequential
        Rename("slot_attention.norm_pre_ff.", "head.attention.corrector.mlp.0."),
        Rename("slot_attention.mlp.0.", "head.attention.corrector.mlp.1."),
        Rename("slot_attention.mlp.2.", "head.attention.corrector.mlp.3."),
        Rename("mlp_slot.", "head.projection."),
    ),
    encoder="encoder.",
    position_tables=(("encoder.vit.pos_embed", 1),),
    unused=("encoder.norm.",),  # their ViT returns the last block's tokens and keys, before this norm
    # The EMA teacher is never saved: it starts as the student here, as theirs starts (a copy of
    # the student's weights). Their teacher's ViT stays at the DINO weights, which the file lacks.
    copies=(("teacher_encoder.", "encoder."), ("teacher_head.average.", "head.")),
    kept=("augmentation.",),  # ocl's own state (the run's blur sigma), drawn when the model is built
)

# --- SLASH: SlotAttentionAutoEncoder of model.py, in a plain torch.save dict ------------------

SLASH = Layout(
    name="slash",
    title="SLASH (object-understanding/SLASH)",
    container="model_state_dict",
    renames=(
        Rename("encoder_cnn.convs.", "encoder.convs."),
        Rename("encoder_cnn.encoder_pos.embedding.", "encoder.position.proj."),  # grid (y, x, 1-y, 1-x) as ocl's
        Rename("encoder_cnn.layer_norm.", "encoder.mlp.0."),  # LayerNorm([H*W, C]): per-position tables
        Rename("encoder_cnn.mlp.0.", "encoder.mlp.1."),
        Rename("encoder_cnn.mlp.2.", "encoder.mlp.3."),
        Rename("decoder_cnn.decoder_pos.embedding.", "decoder.position.proj."),
        Rename("decoder_cnn.deconvs.", "decoder.net."),
        Rename("slot_attention.slots_mu", "processor.initialiser.mu"),
        Rename("slot_attention.slots_sigma", "processor.initialiser.log_sigma"),
        Rename("slot_attention.norm_input.", "processor.corrector.norm_inputs."),
        Rename("slot_attention.norm_slots.", "processor.corrector.norm_slots."),
        Rename("slot_attention.norm_mlp.", "processor.corrector.mlp.0."),
        Rename("slot_attention.mlp.0.", "processor.corrector.mlp.1."),
        Rename("slot_attention.mlp.2.", "processor.corrector.mlp.3."),
        Rename(
            "slot_attention.knconv.", "processor.corrector.logit_refiner."
        ),  # the kernel as their last forward left it
        Rename("slot_attention.pos_predictor.layer_norm.", "processor.corrector.slot_refiner.predictor.0."),
        Rename("slot_attention.pos_predictor.mlp.0.", "processor.corrector.slot_refiner.predictor.1."),
        Rename("slot_attention.pos_predictor.mlp.2.", "processor.corrector.slot_refiner.predictor.3."),
        Rename("slot_attention.pos_predictor.mlp.4.", "processor.corrector.slot_refiner.predictor.5."),
        Rename("slot_attention.pos_encoder.encoder.", "processor.corrector.slot_refiner.encoder."),
        Rename("slot_attention.", "processor.corrector."),  # to_q, to_k, to_v, gru
    ),
    encoder=None,  # a CNN trained from scratch: everything is in the file
    # their initial slots are N(mu, |sigma| + 1e-8); ocl stores the log of that standard deviation
    value_maps=(("processor.initialiser.log_sigma", "log(|x| + 1e-8)"),),
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (VIDEOSAUR, SLOTCONTRAST, SLOTCURRI, SMTC, SLASH)}
"""Every family ``scripts/import_checkpoint.py --from`` accepts."""
