"""SMTC: the slot head, the teacher, the encoder schedule, the loss terms, and both DAVIS evaluations."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, compose_config, run_cli
from omegaconf import OmegaConf
from video_fixtures import write_davis, write_davis_unsupervised

from ocl.build import build_model
from ocl.cli import train
from ocl.eval.label_propagation import PropagationSettings
from ocl.eval.propagation_run import evaluate_label_propagation
from ocl.losses import smtc as smtc_losses
from ocl.metrics.classes import LabelStability
from ocl.modules.augment import PhotometricAugmentation
from ocl.modules.ema import ExponentialMovingAverage
from ocl.modules.semantic_instance import CorrespondenceFusion, SemanticInstanceAttention
from ocl.modules.slot_attention import SlotAttention
from ocl.modules.vit import ViTEncoder
from ocl.utils.schedules import CosineDecay

SYNTHETIC = ["experiment=smtc_synthetic", "data.batch_size=2", "data.val_size=2", "data.val_frames=4"]


def smtc_model(tmp_path, *overrides: str):
    cfg = compose_config([*SYNTHETIC, *overrides, f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    return build_model(cfg)


def two_stage(hard_area: bool, learn_sigma: bool = True) -> SemanticInstanceAttention:
    corrector = SlotAttention(8, 8, num_iterations=3, mlp_hidden_dim=8, update="residual", straight_through=True)
    return SemanticInstanceAttention(corrector, 3, 2, 8, learn_sigma=learn_sigma, hard_area=hard_area)


# ----------------------------------------------------------------------------- slot head


def test_correspondence_fusion_pairs_each_frame_with_the_previous_one_cyclically():
    torch.manual_seed(0)
    fusion = CorrespondenceFusion(dim=4, reference_grid=(2, 3))
    keys = torch.randn(2, 3, 6, 4)  # tokens on a 2 x 3 grid: no resizing
    fused = fusion(keys, (2, 3))
    for b in range(2):
        for t in range(3):
            previous = keys[b, (t - 1) % 3]  # frame 0 pairs with frame T - 1
            correlation = previous @ keys[b, t].T  # [R, N]: previous position r . current position n
            expected = keys[b, t] + (fusion.project.weight[:, :, 0] @ correlation + fusion.project.bias[:, None]).T
            torch.testing.assert_close(fused[b, t], expected, atol=1e-5, rtol=1e-5)


def test_hard_area_keeps_instance_attention_inside_its_semantic():
    torch.manual_seed(0)
    attention = two_stage(hard_area=True)
    inputs = torch.randn(4, 10, 8) * 3
    slots = attention(inputs, torch.randn(4, 3, 2, 8))
    area = slots.semantic_logits > attention.area_threshold  # [B, S, N]
    assert area.any() and (~area).any()
    # the corrector's last attention, recomputed for the instance stage, is zero outside each area
    initial = attention.mu[:, None] + attention.log_sigma.exp()[:, None] * torch.randn(4, 3, 2, 8)
    out = attention.corrector(initial.flatten(1, 2), inputs, input_weights=area.float(), groups=3)
    outside = out.attention.unflatten(1, (3, 2)) * (~area)[:, :, None]
    assert outside.abs().max() == 0


def test_instance_groups_compete_only_within_their_semantic():
    """Stage 2 as one call with groups equals one call per semantic with that semantic's area."""
    torch.manual_seed(1)
    attention = two_stage(hard_area=False)
    inputs, noise = torch.randn(2, 7, 8), torch.randn(2, 3, 2, 8)
    together = attention(inputs, noise)
    area = together.semantic_logits.softmax(dim=1)
    initial = attention.mu[:, None] + attention.log_sigma.exp()[:, None] * noise
    for s in range(3):
        alone = attention.corrector(initial[:, s], inputs, input_weights=area[:, s])
        torch.testing.assert_close(together.instance_slots[:, s], alone.slots, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together.instance_logits[:, s], alone.logits, atol=1e-5, rtol=1e-5)


def test_instance_masks_sum_to_one_over_semantics_and_instances():
    torch.manual_seed(2)
    slots = two_stage(hard_area=True)(torch.randn(2, 5, 8), torch.randn(2, 3, 2, 8))
    masks = slots.instance_masks()
    assert masks.shape == (2, 3, 2, 5)
    torch.testing.assert_close(masks.sum(dim=(1, 2)), torch.ones(2, 5))


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_learn_sigma_decides_whether_stage_2_trains_mu_and_sigma(learn_sigma):
    """True: the reparameterised sample trains both; False: zero gradients, as torch.normal's
    (the instance slots depend on mu only through their initialisation: the hard area has none)."""
    torch.manual_seed(3)
    attention = two_stage(hard_area=True, learn_sigma=learn_sigma)
    slots = attention(torch.randn(2, 6, 8), torch.randn(2, 3, 2, 8))
    slots.instance_slots.square().sum().backward()
    for gradient in (attention.log_sigma.grad, attention.mu.grad):
        assert gradient is not None and (gradient.abs().sum() > 0) == learn_sigma
    attention.zero_grad()
    attention(torch.randn(2, 6, 8), torch.randn(2, 3, 2, 8)).semantic_slots.sum().backward()
    assert attention.mu.grad.abs().sum() > 0  # stage 1 trains mu either way


def test_zero_sigma_gradient_still_lets_adamw_decay_it():
    """The authors' AdamW shrinks their never-trained log-sigma by weight decay: ours too."""
    torch.manual_seed(3)
    attention = two_stage(hard_area=True, learn_sigma=False)
    before = attention.log_sigma.detach().clone()
    optimizer = torch.optim.AdamW([attention.log_sigma], lr=0.1, weight_decay=0.5)
    attention(torch.randn(2, 6, 8), torch.randn(2, 3, 2, 8)).instance_slots.sum().backward()
    optimizer.step()
    torch.testing.assert_close(attention.log_sigma.detach(), before * (1 - 0.1 * 0.5))


def test_log_sigma_starts_as_the_authors_xavier_uniform():
    attention = SemanticInstanceAttention(SlotAttention(384, 384, update="residual"), 16, 4, 384)
    bound = math.sqrt(6 / (17 * 384))  # xavier_uniform_ of a (1, 16, 1, 384) tensor
    values = attention.log_sigma.detach()
    assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound and abs(values.mean()) < 0.05 * bound


def test_qkv_bias_gives_the_projections_biases():
    plain, biased = SlotAttention(8, 8), SlotAttention(8, 8, qkv_bias=True)
    for name in ("to_q", "to_k", "to_v"):
        assert getattr(plain, name).bias is None and getattr(biased, name).bias.shape == (8,)


def test_more_iterations_change_the_slots_and_evaluation_proposals_are_scored(tmp_path):
    model = smtc_model(tmp_path).eval()
    video = torch.rand(1, 3, 3, 64, 64)
    torch.manual_seed(0)
    masks, scores = model.instance_proposals(video)
    torch.manual_seed(0)
    masks5, _ = model.instance_proposals(video, num_iterations=5)
    assert masks.shape == (1, 3, 8, 8, 8) and scores.shape == (1, 3, 8)  # S*I = 4*2 on the 8 x 8 grid
    torch.testing.assert_close(masks.sum(dim=2), torch.ones(1, 3, 8, 8))
    assert scores.abs().max() <= 1 + 1e-6 and not torch.allclose(masks, masks5)


# ----------------------------------------------------------------------------- teacher and optimisation


def test_ema_moves_towards_the_source_and_never_needs_gradients():
    source = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(source, momentum=0.9)
    before = ema.average.weight.clone()
    with torch.no_grad():
        source.weight.add_(1.0)
    ema.update(source)
    torch.testing.assert_close(ema.average.weight, 0.9 * before + 0.1 * source.weight)
    assert not any(p.requires_grad for p in ema.parameters())


def test_training_steps_leave_the_teacher_an_ema_of_the_student(tmp_path):
    model = smtc_model(tmp_path, "model.ema_momentum=0.9")
    model.train()
    teacher_before = [p.clone() for p in model.teacher_head.parameters()]
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    batch = {"video": torch.rand(2, 3, 3, 64, 64)}
    total, _ = model.compute_losses(model(batch), batch)
    total.backward()
    assert all(p.grad is None for p in model.teacher_head.parameters())
    assert all(p.grad is None for p in model.teacher_encoder.parameters())
    model.optimizer_step(0, 0, optimizer)  # the step, then the teacher's update
    for teacher, before, student in zip(model.teacher_head.parameters(), teacher_before, model.head.parameters()):
        torch.testing.assert_close(teacher, 0.9 * before + 0.1 * student.detach())


def test_student_encoder_is_frozen_for_the_first_steps_then_trains_at_its_lr_scale(tmp_path):
    model = smtc_model(tmp_path, "model.encoder_lr_scale=0.01", "model.encoder_freeze=no_grad")
    model.train()
    batch = {"video": torch.rand(1, 2, 3, 64, 64)}
    for frozen_steps, expect_gradient in ((5, False), (0, True)):  # the step is 0 outside a trainer
        model.zero_grad()
        model.encoder_frozen_steps = frozen_steps
        total, _ = model.compute_losses(model(batch), batch)
        total.backward()
        # the keys come from the last block's qkv: that block's later layers never get gradients
        gradients = [p.grad for p in model.encoder.vit.patch_embed.parameters()]
        assert all(g is not None for g in gradients) == expect_gradient
        assert any(p.grad is not None for p in model.encoder.parameters()) == expect_gradient
        assert model.head.attention.mu.grad is not None
    optimizer = model.configure_optimizers()["optimizer"]
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    for group in optimizer.param_groups:
        in_encoder = id(group["params"][0]) in encoder_ids
        assert group["lr"] == pytest.approx(4e-4 * (0.01 if in_encoder else 1.0))
        assert group["weight_decay"] == (0.0 if group["params"][0].ndim <= 1 else 0.1)


@pytest.mark.parametrize("frozen_steps", [5, 0])
def test_zero_lr_freeze_steps_the_encoder_at_lr_0_so_adamw_moments_fill_up(tmp_path, frozen_steps):
    """The authors' freeze: gradients reach the encoder and AdamW steps it at lr 0 (it does not
    move, weight decay included, but its moments fill up); the scheduled lr is kept for later."""
    model = smtc_model(tmp_path, "model.encoder_freeze=zero_lr", f"model.encoder_frozen_steps={frozen_steps}")
    model.train()
    optimizer = model.configure_optimizers()["optimizer"]
    batch = {"video": torch.rand(1, 2, 3, 64, 64)}
    total, _ = model.compute_losses(model(batch), batch)  # the step is 0 outside a trainer
    total.backward()
    encoder = [p for p in model.encoder.parameters() if p.grad is not None]
    assert encoder and all(p.grad.abs().sum() > 0 for p in encoder[:3])
    before = [p.detach().clone() for p in encoder]
    head_before = model.head.attention.mu.detach().clone()
    scheduled = [group["lr"] for group in optimizer.param_groups]
    model.optimizer_step(0, 0, optimizer)
    assert [group["lr"] for group in optimizer.param_groups] == scheduled
    moved = [not torch.equal(p, b) for p, b in zip(encoder, before, strict=True)]
    assert any(moved) == (frozen_steps == 0)
    assert all(optimizer.state[p]["exp_avg"].abs().sum() > 0 for p in encoder[:3])
    assert not torch.equal(model.head.attention.mu, head_before)


def test_cosine_decay_goes_from_the_peak_to_the_final_ratio():
    schedule = CosineDecay(total_steps=100, final_ratio=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(50) == pytest.approx(0.55)
    assert schedule(100) == pytest.approx(0.1) and schedule(150) == pytest.approx(0.1)


def test_vit_encoder_records_gradients_only_when_trainable():
    kwargs = {"image_size": 32, "weights": "random", "depth": 1, "num_heads": 2, "embed_dim": 16, "patch_size": 16}
    frozen = ViTEncoder("vit_tiny_patch16_224", **kwargs)
    trainable = ViTEncoder("vit_tiny_patch16_224", trainable=True, **kwargs)
    images = torch.rand(2, 3, 32, 32)
    assert not frozen(images).keys.requires_grad
    assert trainable(images).keys.requires_grad
    assert frozen.feature_maps(images).shape == (2, 16, 2, 2)


# ----------------------------------------------------------------------------- augmentation


def test_augmentation_is_the_same_for_all_frames_and_independent_between_calls():
    torch.manual_seed(4)
    augment = PhotometricAugmentation(grayscale_probability=0.5, blur_probability=0.5)
    still = torch.rand(6, 1, 3, 16, 16).expand(6, 3, 3, 16, 16)
    first, second = augment(still), augment(still)
    torch.testing.assert_close(first, first[:, :1].expand_as(first))  # frames of a video stay equal
    assert not torch.allclose(first, second)  # student and teacher draws differ
    assert first.min() >= 0 and first.max() <= 1


def test_augmentation_with_every_operation_off_is_the_identity():
    augment = PhotometricAugmentation(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, blur_probability=0.0)
    video = torch.rand(2, 2, 3, 8, 8)
    torch.testing.assert_close(augment(video), video)


def test_a_run_blur_sigma_is_drawn_once_and_saved_with_the_model():
    torch.manual_seed(5)
    run = PhotometricAugmentation(0.0, 0.0, blur_probability=1.0, blur_sigma_draw="run")
    sigma = float(run.run_blur_sigma)
    assert 0.1 <= sigma <= 2.0 and "run_blur_sigma" in run.state_dict()
    assert "run_blur_sigma" not in PhotometricAugmentation().state_dict()  # per-video draws: nothing to save
    video = torch.rand(1, 1, 3, 32, 32).expand(4, 1, 3, 32, 32)  # four copies of one clip
    blurred = run(video)
    torch.testing.assert_close(blurred, blurred[:1].expand_as(blurred))  # every clip blurred with the same sigma
    per_video = PhotometricAugmentation(0.0, 0.0, blur_probability=1.0)(video)
    assert not torch.allclose(per_video, per_video[:1].expand_as(per_video))
    with pytest.raises(ValueError, match="blur_sigma_draw"):
        PhotometricAugmentation(blur_sigma_draw="step")


def test_grayscale_makes_the_channels_equal():
    augment = PhotometricAugmentation(grayscale_probability=1.0, jitter_probability=0.0, blur_probability=0.0)
    out = augment(torch.rand(2, 2, 3, 8, 8))
    torch.testing.assert_close(out[:, :, 0], out[:, :, 1])


# ----------------------------------------------------------------------------- loss terms and metrics


def test_loss_terms_apply_the_formulas_to_the_model_output(tmp_path):
    model = smtc_model(tmp_path)
    model.train()
    batch = {"video": torch.rand(2, 3, 3, 64, 64)}
    output = model(batch)
    extras = output.extras
    _, terms = model.compute_losses(output, batch)
    expected_semantic = smtc_losses.semantic_consistency(
        extras["semantic_logits"], extras["teacher_semantic_logits"].softmax(dim=2), extras["teacher_keys"]
    )
    torch.testing.assert_close(terms["semantic_consistency"], expected_semantic)
    torch.testing.assert_close(terms["diversity"], smtc_losses.mask_diversity(extras["semantic_logits"].softmax(2)))
    valid = [
        smtc_losses.instance_validity(
            extras[p + "semantic_slots"], extras[p + "instance_slots"], extras[p + "semantic_logits"].softmax(2)
        )
        for p in ("", "teacher_")
    ]
    expected_instance = smtc_losses.instance_consistency(
        extras["instance_embeddings"], extras["teacher_instance_embeddings"], *valid
    )
    torch.testing.assert_close(terms["instance_consistency"], expected_instance)
    assert output.masks.shape == (2, 3, 8, 8, 8)  # S*I = 4*2 instance masks on the 8 x 8 token grid
    torch.testing.assert_close(extras["instance_embeddings"].norm(dim=-1), torch.ones(2, 3, 4, 2))


def test_label_stability_counts_objects_keeping_their_majority_id():
    table = torch.zeros(1, 3, 2, 3, dtype=torch.float64)  # [B, T, P, M + 1]
    table[0, :, 0, 1] = 5  # object 1: id 0 in every frame
    table[0, 0, 1, 2], table[0, 1, 0, 2], table[0, 2, 0, 2] = 4, 4, 4  # object 2: id 1, then 0, 0
    metric = LabelStability()
    metric.update(torch.zeros(1, 3, 2, 1, 1), torch.zeros(1, 3, 1, 1, dtype=torch.long), table=table)
    assert metric.compute().item() == pytest.approx(3 / 4)  # pairs: obj1 2/2, obj2 1/2


# ----------------------------------------------------------------------------- runs and evaluations


def test_propagation_of_identical_frames_scores_one(tmp_path):
    encoder = ViTEncoder(
        "vit_tiny_patch16_224", image_size=32, weights="random", depth=1, num_heads=2, embed_dim=16, patch_size=8
    )
    frame = torch.rand(3, 32, 32)
    labels = torch.zeros(5, 32, 32, dtype=torch.long)
    labels[:, 8:24, 8:16], labels[:, 0:8, 16:32] = 1, 2
    videos = [{"video": frame.expand(5, 3, 32, 32), "masks": labels, "meta": {"video_id": "still"}}]
    # Features upsampled to every pixel (stride 1), so the labels need no resizing; top-k = the 3
    # context frames: each position keeps its own copies (cosine 1).
    settings = PropagationSettings(topk=3, radius=3, temperature=0.05, n_context=2, feature_stride=1)
    result = evaluate_label_propagation(encoder, videos, settings, 1, None, chunk=2, prediction_dir=tmp_path)
    assert result.j == 1.0 and result.f == 1.0 and result.num_objects == 2
    assert len(list((tmp_path / "still").glob("*.png"))) == 5


@pytest.mark.slow
def test_smtc_trains_then_both_davis_evaluations_run(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*SYNTHETIC, "trainer.max_steps=3", "trainer.val_check_interval=3", "logger=csv"]
    metrics = train(
        compose_config([*overrides, "callbacks.progress_bar=null", f"paths.output_dir={run_dir}"]), overrides
    )
    assert all(math.isfinite(metrics[f"val/{name}"]) for name in ("video_fg_ari", "semantic_stability", "loss"))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    fixture = write_davis(tmp_path / "davis")
    davis = fixture.root
    common = [f"data.root={davis}", "data.num_workers=0", "callbacks.progress_bar=null"]
    discovery = [f"ckpt_path={checkpoint}", "eval=object_discovery", "data=davis2017", *common]
    discovery += ["eval.settings.frame_size=[32,48]", "eval.device=cpu", f"paths.output_dir={tmp_path / 'discovery'}"]

    missing = run_cli("eval.py", discovery)  # the unsupervised labels are a separate download
    assert missing.returncode != 0 and "DAVIS-2017-Unsupervised-trainval-480p.zip" in missing.stderr
    assert "Traceback" not in missing.stderr
    write_davis_unsupervised(fixture)
    result = run_cli("eval.py", discovery)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "discovery" / "metrics.json").read_text())
    assert 0 <= scores["val/j_and_f"] <= 1 and scores["val/num_videos"] == 2 and scores["val/num_objects"] == 4

    for source in ([f"ckpt_path={checkpoint}"], ["model=dino_vits16", "model.weights=random"]):
        out = tmp_path / f"propagation_{len(source)}"
        result = run_cli(
            "eval.py",
            [*source, "eval=label_propagation", "data=davis2017", "eval.short_side=48", *common]
            + [f"paths.output_dir={out}"],
        )
        assert result.returncode == 0, result.stderr[-3000:]
        scores = json.loads((out / "metrics.json").read_text())
        assert scores["val/num_videos"] == 1 and scores["val/videos_skipped"] == 1  # dogs has 2 frames
        assert 0 <= scores["val/j_and_f"] <= 1
        assert len(list((out / "predictions" / "camel").glob("*.png"))) == 3


@pytest.mark.slow
def test_two_process_ddp_training_keeps_one_teacher_on_both_ranks(tmp_path):
    """Real DDP (two gloo processes from train.py) with the recipe's options (encoder at lr 0 for
    2 steps, zero-gradient instance init, noise per frame, one blur sigma): the EMA teachers stay
    identical across ranks."""
    recipe = ["model.encoder_freeze=zero_lr", "model.encoder_frozen_steps=2", "model.head.attention.learn_sigma=false"]
    recipe += ["model.shared_instance_noise=false", "model.augmentation.blur_sigma_draw=run"]
    result = run_cli(
        "train.py",
        [*SYNTHETIC, *recipe, "data.train_size=8", "data.batch_size=1"]
        + ["trainer.max_steps=3", "trainer.val_check_interval=3", "logger=csv", "callbacks.progress_bar=null"]
        + ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
        + ["trainer.strategy=ddp_find_unused_parameters_true"]
        + ["+callbacks.teacher_check._target_=ddp_checks.TeacherAgreement", f"hydra.run.dir={tmp_path}"],
        env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("teacher identical on 2 ranks") == 2


@pytest.mark.slow
def test_label_propagation_of_a_model_without_a_vit_is_a_one_line_error(tmp_path):
    result = run_cli("eval.py", ["eval=label_propagation", "data.val_size=2", f"paths.output_dir={tmp_path}"])
    assert result.returncode != 0
    assert "label propagation needs a patch encoder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_segmentation_eval_without_a_checkpoint_says_so(tmp_path):
    result = run_cli("eval.py", [f"paths.output_dir={tmp_path}"])
    assert result.returncode != 0 and "needs ckpt_path" in result.stderr and "Traceback" not in result.stderr


def test_semantic_masks_follow_the_model_output_contract(tmp_path):
    model = smtc_model(tmp_path, "model.eval_losses=false").eval()
    with torch.no_grad():
        output = model({"video": torch.rand(1, 2, 3, 64, 64)})
    assert "teacher_keys" not in output.extras  # eval_losses: the teacher runs only when its losses are logged
    torch.testing.assert_close(output.extras["semantic_masks"].sum(dim=2), torch.ones(1, 2, 8, 8))
    assert F.softmax(output.extras["semantic_logits"], dim=2).shape == (1, 2, 4, 64)
