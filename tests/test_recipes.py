"""Every recipe experiment composes to the authors' settings (METHODS.md, top: a recipe builds what
the authors' code runs). Each table row is ``dotted config key: expected value``; a key missing
from the composed config fails too. Flags that are ocl's own fixes or improvements must be off
here (docs/methods.md, "Flags").
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CONFIG_DIR, compose_config
from omegaconf import OmegaConf

RECIPE_PREFIXES = ("videosaur_", "slotcontrast_", "slotcurri_", "smtc_ytvos", "slash_movi", "slash_clevr6")
RECIPES = sorted(
    p.stem
    for p in (CONFIG_DIR / "experiment").glob("*.yaml")
    if p.stem.startswith(RECIPE_PREFIXES) and not p.stem.endswith("_synthetic")
)

# VideoSAUR, SlotContrast, SlotCurri (issue 13, items 1-9): the authors' configs/<method>/<dataset>.y(a)ml
# and train.py (VideoSAUR 5d09311, SlotContrast, SlotCurri a26a379).
_FEATURE_TRAINER = {
    "trainer.max_steps": 100_000,
    "trainer.gradient_clip_val": 0.05,
    "trainer.devices": 1,
    "model.optimizer._target_": "torch.optim.Adam",
    "model.scheduler.warmup_steps": 2500,
    "model.scheduler.decay_steps": 100_000,
    "model.scheduler.decay_rate": 0.5,
    "data.train_clip_length": 4,
    "data.train_aligned_start": True,  # sample_one_chunk_per_video
    "callbacks.checkpoint.every_n_train_steps": 1000,  # checkpoint_every_n_steps
    "loss.cycle_sfs.weight": 0.0,  # ocl's own losses: off
    "loss.cycle_fsf.weight": 0.0,
}
_MOVI_PIPELINE = {  # 128 x 128 files, bicubic (no antialiasing) to the model's size, clamped; flips p 0.5
    "data.eval_clip_length": None,  # whole 24-frame videos
    "data.eval_chunked": False,
    "data.eval_subset": None,  # their loader scores every MOVi video
    "data.train_transform.mode": "resize",
    "data.train_transform.interpolation": "bicubic",
    "data.train_transform.antialias": False,
    "data.train_transform.horizontal_flip": True,
    "data.train_transform.stored_short_side": "<missing>",
    "data.eval_transform.mode": "resize",
    "data.eval_transform.interpolation": "bicubic",
    "data.eval_transform.antialias": False,
}
_YTVIS_PIPELINE = {  # 320-short-side files; short side (floored long side) + random crop / centred square
    "data._target_": "ocl.data.ytvis.YTVISDataModule",
    "data.version": 2021,
    "data.num_val_videos": 300,
    "data.train_transform.mode": "short_side_crop",
    "data.train_transform.crop": "random",
    "data.train_transform.interpolation": "bicubic",
    "data.train_transform.antialias": False,
    "data.train_transform.long_side_rounding": "floor",
    "data.train_transform.stored_short_side": 320,
    "data.eval_transform.mode": "center_square",
    "data.eval_transform.interpolation": "bicubic",
    "data.eval_transform.antialias": False,
    "data.eval_transform.stored_short_side": 320,
}
_SUBSET = "ocl.data.eval_subset.WebDatasetEvalSubset"
_VIDEOSAUR = {
    **_FEATURE_TRAINER,
    **_MOVI_PIPELINE,
    "data._target_": "ocl.data.movi.MoviDataModule",
    "data.variant": "movi_c",
    "data.batch_size": 128,
    "data.val_batch_size": 16,
    "data.train_transform.size": 224,
    "data.eval_transform.size": 224,
    "model.optimizer.lr": 4e-4,  # 128 / 32 * 1e-4
    "trainer.val_check_interval": 1000,
    "trainer.precision": "32-true",
    "model.encoder.model_name": "vit_base_patch8_224.dino",
    "model.encoder.image_size": 224,
    "model.encoder.block": 12,
    "model.reconstruct_features": False,
    "model.predict_similarity": True,
    "model.processor.initialiser._target_": "ocl.modules.initialisers.GaussianInit",
    "model.processor.initialiser.num_slots": 11,
    "model.processor.initialiser.dim": 128,
    "model.processor.initialiser.mean_init": "zeros",
    "model.processor.corrector.num_iterations": 2,
    "model.processor.first_frame_iterations": 3,
    "model.processor.corrector.mlp_hidden_dim": 0,
    "model.processor.corrector.gru_state": "normalised",
    "model.processor.predictor.num_heads": 4,
    "model.processor.predictor.legacy_scale": True,
    "model.decoder._target_": "ocl.modules.decoders.SlotMixerDecoder",
    "model.decoder.num_blocks": 2,
    "model.decoder.num_heads": 4,
    "model.decoder.hidden_dims": [1024, 1024, 1024, 1024],
    "model.decoder.legacy_scale": True,
    "loss.similarity.temperature": 0.075,
    "loss.similarity.weight": 0.1,
    "loss.similarity.unmatched_rows": "uniform",
    "loss.mse.weight": 0.0,
    "model.cyclic_inference": False,
    "callbacks.curriculum": "<missing>",
}
_SLOTCONTRAST = {
    **_FEATURE_TRAINER,
    **_MOVI_PIPELINE,
    "data._target_": "ocl.data.movi.MoviDataModule",
    "data.variant": "movi_c",
    "data.batch_size": 64,
    "data.val_batch_size": 16,
    "data.train_transform.size": 336,
    "data.eval_transform.size": 336,
    "model.optimizer.lr": 4e-4,
    "trainer.val_check_interval": 2500,
    "trainer.precision": "32-true",
    "model.encoder.model_name": "vit_small_patch14_dinov2.lvd142m",
    "model.encoder.image_size": 336,
    "model.encoder.block": 12,
    "model.reconstruct_features": True,
    "model.predict_similarity": False,
    "model.processor.initialiser._target_": "ocl.modules.initialisers.LearnedInit",
    "model.processor.initialiser.num_slots": 11,
    "model.processor.initialiser.dim": 64,
    "model.processor.corrector.num_iterations": 2,
    "model.processor.first_frame_iterations": 3,
    "model.processor.corrector.mlp_hidden_dim": 256,
    "model.processor.corrector.gru_state": "normalised",
    "model.processor.predictor.num_heads": 4,
    "model.processor.predictor.legacy_scale": True,
    "model.decoder._target_": "ocl.modules.decoders.MLPFeatureDecoder",
    "model.decoder.hidden_dims": [1024, 1024, 1024],
    "loss.mse.weight": 1.0,
    "loss.contrastive.temperature": 0.1,
    "loss.contrastive.weight": 0.5,
    "loss.contrastive.softmax_over": "current",
    "model.cyclic_inference": False,
}
_SLOTCONTRAST_MOVI_E = {
    **_SLOTCONTRAST,
    "data.variant": "movi_e",
    "data.val_batch_size": 4,
    "trainer.max_steps": 300_000,
    "model.scheduler.decay_steps": 300_000,
    "model.encoder.model_name": "vit_base_patch14_dinov2.lvd142m",
    "model.processor.initialiser.num_slots": 15,
    "model.processor.initialiser.dim": 128,
    "model.processor.corrector.mlp_hidden_dim": 512,
}
_SLOTCONTRAST_YTVIS = {
    **_SLOTCONTRAST,
    **_YTVIS_PIPELINE,
    "data.variant": "<missing>",
    "data.val_batch_size": 1,
    "data.eval_clip_length": None,  # whole videos, the first 210 of the 300
    "data.eval_chunked": False,
    "data.eval_subset": {"_target_": _SUBSET, "val_size": 200, "shard_size": 10, "num_workers": 1, "batch_size": 1},
    "data.train_transform.size": 518,
    "data.train_transform.horizontal_flip": False,
    "data.eval_transform.size": 518,
    "model.optimizer.lr": 8e-4,
    "model.encoder.model_name": "vit_base_patch14_dinov2.lvd142m",
    "model.encoder.image_size": 518,
    "model.processor.initialiser.num_slots": 7,
    "model.processor.initialiser.dim": 64,
}
_SLOTCURRI = {  # SlotContrast's model and data + curriculum, 3-D SSIM, fp16 AMP, cyclic evaluation
    "trainer.precision": "16-mixed",
    "model.optimizer.lr": 8e-4,
    "loss.ssim3d.weight": 0.05,
    "loss.ssim3d.window": 3,
    "model.cyclic_inference": True,
    "callbacks.curriculum._target_": "ocl.callbacks.curriculum.SlotCurriculum",
    "callbacks.curriculum.stages": None,  # [2, N // 2, N]
    "callbacks.curriculum.growth_steps": None,  # [max_steps // 10, max_steps // 4]
    "callbacks.curriculum.noise_scale": 0.2,
    "callbacks.curriculum.neighbours_over_all_slots": True,
    "callbacks.curriculum.split_from_copy": False,
}
FEATURE_VIDEO: dict[str, dict[str, Any]] = {
    "videosaur_movi_c": _VIDEOSAUR,
    "videosaur_movi_e": {**_VIDEOSAUR, "data.variant": "movi_e", "model.processor.initialiser.num_slots": 15},
    "videosaur_ytvis": {
        **_VIDEOSAUR,
        **_YTVIS_PIPELINE,
        "data.variant": "<missing>",
        "data.eval_clip_length": 6,  # 6-frame chunks, whole ones only
        "data.eval_chunked": True,
        "data.eval_drop_partial_chunks": True,
        "data.eval_subset": {  # 14 batches of 16 chunks from 8 workers
            "_target_": _SUBSET,
            "val_size": 200,
            "shard_size": 10,
            "num_workers": 8,
            "batch_size": 16,
        },
        "data.train_transform.horizontal_flip": True,
        "model.encoder.model_name": "vit_base_patch16_224.dino",
        "model.reconstruct_features": True,
        "model.processor.initialiser.num_slots": 7,
        "model.processor.initialiser.dim": 64,
        "model.decoder.num_blocks": 3,
        "model.decoder.hidden_dims": [1024, 1024, 1024],
        "loss.similarity.temperature": 0.25,
        "loss.mse.weight": 1.0,
    },
    "slotcontrast_movi_c": {**_SLOTCONTRAST, "callbacks.curriculum": "<missing>"},
    "slotcontrast_movi_e": {**_SLOTCONTRAST_MOVI_E, "callbacks.curriculum": "<missing>"},
    "slotcontrast_ytvis": {**_SLOTCONTRAST_YTVIS, "callbacks.curriculum": "<missing>"},
    # 2 GPUs x 64 (YT-VIS: x 32); their contrastive loss pools each GPU's batch only
    "slotcurri_movi": {**_SLOTCONTRAST, **_SLOTCURRI, "data.batch_size": 128, "loss.contrastive.pool_videos": 64},
    "slotcurri_movi_e": {
        **_SLOTCONTRAST_MOVI_E,
        **_SLOTCURRI,
        "data.batch_size": 128,
        "loss.contrastive.pool_videos": 64,
    },
    "slotcurri_ytvis": {**_SLOTCONTRAST_YTVIS, **_SLOTCURRI, "data.batch_size": 64, "loss.contrastive.pool_videos": 32},
}

# SMTC (items 10-11): shvdiwnkozbw/SMTC 4a31e5c, start_twostage.sh, src/train.py, src/data.py,
# src/model/model_twostage.py, src/utils.py (Augment_GPU_pre). The schedule (model.scheduler) is the
# schedules' table's.
SMTC: dict[str, dict[str, Any]] = {
    "smtc_ytvos": {
        "model._target_": "ocl.methods.smtc.SMTC",
        "model.encoder.model_name": "vit_small_patch16_224.dino",  # vit_small(16) + DINO weights
        "model.encoder.image_size": 256,
        "model.encoder.block": 12,  # the last block's keys
        "model.encoder.trainable": True,
        "model.encoder.drop_path_rate": 0.1,  # their vit_small's stochastic depth in training
        "model.encoder.position_interpolation": "dino_per_call",  # 14x14 table resampled every call
        "model.head.fusion.reference_grid": [16, 16],  # end_size = 256 // 16
        "model.head.attention.corrector.num_iterations": 3,  # --num_iterations 3
        "model.head.attention.corrector.mlp_hidden_dim": 384,
        "model.head.attention.corrector.update": "residual",  # slots_prev + updates, no GRU
        "model.head.attention.corrector.straight_through": True,
        "model.head.attention.corrector.qkv_bias": True,  # nn.Linear(384, 384) with biases
        "model.head.attention.num_semantic": 16,  # --num_slots 16
        "model.head.attention.num_instances": 4,  # --num_instance 4
        "model.head.attention.learn_sigma": False,  # torch.normal: no stage-2 gradient
        "model.head.attention.hard_area": True,  # semantic_attn > 0.3
        "model.head.attention.area_threshold": 0.3,
        "model.head.projection_hidden_dim": 768,  # mlp_slot 384 -> 768 -> 384
        "model.augmentation.grayscale_probability": 0.2,
        "model.augmentation.jitter_probability": 0.8,
        "model.augmentation.blur_probability": 0.5,
        "model.augmentation.blur_sigma_draw": "run",  # sigma drawn once when the pipeline is built
        "model.ema_momentum": 0.999,
        "model.encoder_frozen_steps": 3000,  # --grad_iter 3000
        "model.encoder_freeze": "zero_lr",  # lr 0, gradients and AdamW moments flowing
        "model.encoder_lr_scale": 0.01,
        "model.shared_instance_noise": False,  # torch.normal per frame
        "model.optimizer._target_": "torch.optim.AdamW",
        "model.optimizer.lr": 2e-5,  # --lr 2e-5
        "model.optimizer.weight_decay": 0.1,  # wd_scheduler 0.1 on weights, 0 on biases / norms
        "loss.semantic_consistency.weight": 1.0,  # cons_scale 1 (--bi_cons)
        "loss.semantic_consistency.epsilon": 0.05,
        "loss.semantic_consistency.iterations": 3,
        "loss.diversity.weight": 1.0,  # ent_scale 1 (--entro_cons)
        "loss.instance_consistency.weight": 1.0,
        "loss.instance_consistency.push_margin": 0.5,
        "loss.instance_consistency.pull": "negative_cosine",
        "loss.instance_consistency.slot_threshold": 0.5,
        "loss.instance_consistency.area_threshold": 0.2,
        "loss.instance_consistency.mask_threshold": 0.3,
        "data._target_": "ocl.data.ytvos.YouTubeVOSDataModule",
        "data.val_held_out": False,  # every training video
        "data.train_clip_length": 4,  # --num_frames 4
        "data.frame_stride": 4,  # --gap 4
        "data.clip_draw": "smtc",
        "data.train_transform.size": 256,
        "data.train_transform.mode": "resize",
        "data.train_transform.horizontal_flip": False,
        "data.train_transform.antialias": False,  # cv2.resize INTER_LINEAR
        "data.batch_size": 128,  # 4 GPUs x 32 clips, on one device
        "trainer.devices": 1,
        "trainer.max_steps": 9984,  # their lr table's length (--num_train_steps 10000 // 78 batches * 78)
        "model.scheduler.total_steps": 9984,
        "trainer.precision": "32-true",
        "trainer.gradient_clip_val": None,
    },
}

_SLASH = {
    # the base model (SLASH b6e9aca model.py, configs/SA_base.yaml)
    "model.encoder.channels": [64, 64, 64, 64],
    "model.encoder.strides": [1, 1, 1, 1],
    "model.encoder.kernel_size": 5,
    "model.encoder.output_dim": 64,
    "model.encoder.last_relu": False,
    "model.encoder.centre_inputs": False,
    "model.encoder.joint_norm_tokens": 128 * 128,
    "model.processor.initialiser._target_": "ocl.modules.initialisers.GaussianInit",
    "model.processor.initialiser.num_slots": 7,
    "model.processor.initialiser.dim": 64,
    "model.processor.initialiser.mean_init": "normal",
    "model.processor.initialiser.std_init": "uniform",
    "model.processor.initialiser.learn": False,
    "model.processor.predictor": None,
    "model.processor.corrector.num_iterations": 3,
    "model.processor.corrector.mlp_hidden_dim": 128,
    "model.processor.corrector.temperature": None,
    "model.processor.corrector.eps": 1e-8,
    "model.processor.corrector.qkv_bias": True,
    "model.processor.corrector.gru_state": "raw",
    "model.decoder.output_size": 128,
    "model.decoder.broadcast_size": 8,
    "model.decoder.channels": [64, 64, 64, 64, 64],
    "model.decoder.kernel_size": 5,
    "model.decoder.transposed": True,
    # ARK and IPPE (configs/*/SLASH_0.1_0.75_*.yaml)
    "model.processor.corrector.logit_refiner._target_": "ocl.modules.ark.AttentionRefiningKernel",
    "model.processor.corrector.logit_refiner.variant": "wnconv",
    "model.processor.corrector.logit_refiner.size": 5,
    "model.processor.corrector.logit_refiner.learn": False,
    "model.processor.corrector.logit_refiner.sigma": None,
    "model.processor.corrector.logit_refiner.padding": None,
    "model.processor.corrector.slot_refiner._target_": "ocl.modules.points.PointPredictorEncoder",
    "model.processor.corrector.slot_refiner.match_once": True,
    "model.processor.corrector.slot_refiner.match_absent": True,
    # losses and weak supervision (train.py, datasets.py)
    "loss.mse.weight": 1.0,
    "loss.points.weight": 0.01,
    "loss.points.all_iterations": True,
    "loss.points.average": "labelled",
    "data.batch_size": 64,
    "data.point_labels.labelled_fraction": 0.1,
    "data.point_labels.batch_fraction": 0.25,
    "data.point_labels.unlabelled_from_all": True,
    "data.train_clip_length": 1,
    "data.train_transform.size": 128,
    "data.train_transform.mode": "resize",
    # optimisation (train.py, SA_base.yaml)
    "model.optimizer._target_": "torch.optim.Adam",
    "model.optimizer.lr": 4e-4,
    "model.scheduler.warmup_steps": 0.02,
    "model.scheduler.decay_steps": 0.2,
    "model.scheduler.decay_rate": 0.5,
    "trainer.gradient_clip_val": 2.0,
    "trainer.precision": "16-mixed",
}

# SLASH (items 12-13).
SLASH: dict[str, dict[str, Any]] = {
    "slash_movi": {
        **_SLASH,
        "trainer.max_steps": 800 * 203,  # 800 epochs of ceil(9737 / 48) steps
        "model.scheduler.total_steps": 800 * 203,
        "data._target_": "ocl.data.movi.MoviDataModule",
        "data.train_random_start": False,
        "data.point_labels.centre": "box",
    },
    "slash_clevr6": {
        **_SLASH,
        "trainer.max_steps": 800 * 730,  # 800 epochs of ceil(35000 / 48) steps
        "model.scheduler.total_steps": 800 * 730,
        "data._target_": "ocl.data.clevr.ClevrDataModule",
        "data.crop": False,
        "data.point_labels.centre": "projected",
    },
}

EXPECTED = {**FEATURE_VIDEO, **SMTC, **SLASH}


def composed(experiment: str) -> Any:
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=/unused", "paths.data_root=/unused"])
    OmegaConf.resolve(cfg)
    return cfg


def test_every_recipe_has_expected_values():
    assert set(RECIPES) == set(EXPECTED), f"recipes without a table: {sorted(set(RECIPES) - set(EXPECTED))}"


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_recipe_values(experiment):
    cfg = composed(experiment)
    wrong = {}
    for key, expected in EXPECTED[experiment].items():
        actual = OmegaConf.select(cfg, key, default="<missing>")
        if OmegaConf.is_config(actual):
            actual = OmegaConf.to_container(actual)
        if actual != expected:
            wrong[key] = (actual, expected)
    assert not wrong, f"{experiment}: (composed, recipe) differ for {wrong}"
