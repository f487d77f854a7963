"""predict.py: overlay mp4 and slot-id PNGs of any video, chunked with the slots carried over; clear errors."""

from __future__ import annotations

from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, run_cli
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter
from video_fixtures import block_frames, write_mp4

from ocl.build import UsageError
from ocl.callbacks.visualisation import slot_palette
from ocl.data.transforms import VideoTransform
from ocl.predict.model import (
    ChunkingError,
    SlotTracker,
    check_chunking,
    compose_run_config,
    load_trained_model,
    predict_masks,
    predict_output,
    resolve_device,
)
from ocl.predict.video import predict_video, run_prediction
from ocl.predict.writers import VOID_ID, model_view, prepare_out_dir
from ocl.utils.checkpoints import CheckpointError

NUM_SLOTS = 3
"""``model.processor.initialiser.num_slots`` of the tiny checkpoint (conftest.TINY)."""
NUM_FRAMES = 11


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path):
    return load_trained_model(compose_run_config(tiny_checkpoint))


def read_ids(masks_dir: Path) -> np.ndarray:
    """The slot ids of every mask PNG in ``masks_dir``, uint8 ``[T, H, W]``; asserts they are palette PNGs."""
    pages = []
    for path in sorted(masks_dir.iterdir()):
        with Image.open(path) as image:
            assert image.mode == "P"
            pages.append(np.asarray(image))
    return np.stack(pages)


def overlay_error(written: np.ndarray, frames: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> float:
    """Mean absolute difference (0..255) between an overlay as decoded and ``frames [T, H, W, 3]`` blended
    with the colours of the slots ``ids [T, H, W]`` (void pixels untouched), over the pixels whose
    5 x 5 neighbourhood has one id: h264's 4:2:0 chroma smears colours across id boundaries."""
    colours = np.zeros((256, 3))
    colours[:NUM_SLOTS] = slot_palette(NUM_SLOTS).numpy() * 255
    expected = np.where((ids == VOID_ID)[..., None], frames, (1 - alpha) * frames + alpha * colours[ids])
    interior = minimum_filter(ids, size=(1, 5, 5)) == maximum_filter(ids, size=(1, 5, 5))
    return float(np.abs(written.astype(float) - expected)[interior].mean())


@pytest.mark.slow
def test_overlay_has_the_inputs_frames_rate_and_size_and_pngs_hold_slot_ids(tiny_checkpoint, tmp_path):
    frames = block_frames(3, NUM_FRAMES)
    video = write_mp4(tmp_path / "my clip.mp4", frames, lossless=False)
    out = tmp_path / "out"
    result = run_cli(
        "predict.py", [f"ckpt_path={tiny_checkpoint}", f"video='{video}'", "chunk_size=4", f"hydra.run.dir={out}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{NUM_FRAMES} frames at 8 fps, {NUM_SLOTS} slots" in result.stdout

    overlay = decord.VideoReader(str(out / "overlay.mp4"))
    assert len(overlay) == NUM_FRAMES and overlay.get_avg_fps() == 8
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 8 and stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == NUM_FRAMES

    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{t:05d}.png" for t in range(NUM_FRAMES)]
    ids = read_ids(out / "masks")
    assert ids.shape == (NUM_FRAMES, *frames.shape[1:3])
    assert set(np.unique(ids)) <= set(range(NUM_SLOTS))  # the whole frame is seen: no void
    assert len(np.unique(ids)) > 1

    # The overlay tints each pixel with the colour of the slot its PNG names (up to h264 losses).
    decoded_input = decord.VideoReader(str(video)).get_batch(list(range(NUM_FRAMES))).asnumpy()
    written = overlay.get_batch(list(range(NUM_FRAMES))).asnumpy()
    assert overlay_error(written, decoded_input, ids) < 8
    assert overlay_error(written, decoded_input, (ids + 1) % NUM_SLOTS) > 40  # other colours: far off


TIE_MARGIN = 1e-5
"""Soft-mask gap between a pixel's two largest slots below which its argmax is a tie: float sums
change with the chunk's shape and the thread count, so such pixels may flip between runs."""


def test_chunked_prediction_equals_one_pass_over_the_whole_video(model, tmp_path):
    video = write_mp4(tmp_path / "clip.mp4", block_frames(4, NUM_FRAMES), lossless=False)
    transform = VideoTransform(32, "resize")
    for chunk_size in (1, 4, NUM_FRAMES):
        prediction = predict_video(model, video, tmp_path / str(chunk_size), transform, chunk_size, progress=False)
        assert prediction.num_frames == NUM_FRAMES and prediction.num_slots == NUM_SLOTS
    whole = read_ids(tmp_path / str(NUM_FRAMES) / "masks")

    # The soft masks of one pass, resized as the writer resizes them: where they are not a tie,
    # every chunk size must write the same slot id.
    frames = decord.VideoReader(str(video)).get_batch(list(range(NUM_FRAMES))).asnumpy()
    soft = predict_masks(model, transform(frames, None)[0])
    resized = F.interpolate(soft.float(), size=whole.shape[1:], mode="bilinear", align_corners=False)
    top_two = resized.topk(2, dim=1).values
    decided = (top_two[:, 0] - top_two[:, 1] > TIE_MARGIN).numpy()
    assert decided.mean() > 0.95
    assert np.array_equal(resized.argmax(dim=1).numpy()[decided], whole[decided])
    for chunk_size in (1, 4):
        assert np.array_equal(read_ids(tmp_path / str(chunk_size) / "masks")[decided], whole[decided])


def test_chunks_continue_from_the_previous_slots(model):
    frames = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = SlotTracker(model)(frames)
    tracker = SlotTracker(model)
    first, second = tracker(frames[:3]), tracker(frames[3:])
    torch.testing.assert_close(torch.cat([first.slots, second.slots], dim=1), whole.slots)
    torch.testing.assert_close(torch.cat([first.masks, second.masks], dim=1), whole.masks)
    joined = predict_output(model, frames, chunk_size=3)  # chunks of 3, 3, 1 frames
    for name in ("slots", "masks", "reconstruction"):
        torch.testing.assert_close(getattr(joined, name), getattr(whole, name))
    restarted = SlotTracker(model)(frames[3:])  # a fresh start instead of the carried slots
    assert (restarted.slots - whole.slots[:, 3:]).abs().max() > 1e-2


def test_a_crop_model_masks_the_centre_square_at_the_videos_odd_size(model, tmp_path):
    height, width = 45, 61
    video = write_mp4(tmp_path / "odd.mp4", block_frames(6, 5)[:, :height, :width])
    transform = VideoTransform(32, "short_side_crop")
    prediction = predict_video(model, video, tmp_path / "out", transform, chunk_size=2, progress=False)
    ids = read_ids(prediction.masks_dir)
    assert ids.shape == (5, height, width)
    left = (width - height) // 2
    assert set(np.unique(ids[:, :, :left])) == {VOID_ID} and set(np.unique(ids[:, :, left + height :])) == {VOID_ID}
    assert set(np.unique(ids[:, :, left : left + height])) <= set(range(NUM_SLOTS))
    with av.open(str(prediction.overlay)) as container:
        written = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert written.shape == (5, height + 1, width + 1, 3)  # h264 4:2:0: the last row and column repeated
    decoded_input = decord.VideoReader(str(video)).get_batch(list(range(5))).asnumpy()
    assert overlay_error(written[:, :height, :width], decoded_input, ids) < 8


@pytest.mark.parametrize(("height", "width"), [(48, 64), (64, 48)])
def test_model_view_is_the_region_the_transform_reads(height, width):
    rows, columns = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    frame = np.stack([np.sin(6 * columns) / 2 + 0.5, rows, np.cos(5 * rows * columns) / 2 + 0.5], axis=-1)
    frame = (frame * 255).astype(np.uint8)[None]
    transform = VideoTransform(32, "short_side_crop")
    model_input, _ = transform(frame, None)

    def resized(view: tuple[slice, slice]) -> torch.Tensor:
        region = torch.from_numpy(np.ascontiguousarray(frame[:, view[0], view[1]])).permute(0, 3, 1, 2) / 255
        return F.interpolate(region, size=(32, 32), mode="bilinear", antialias=True)

    view = model_view(transform, height, width)
    side = min(height, width)
    assert (view[0].stop - view[0].start, view[1].stop - view[1].start) == (side, side)
    shifted = tuple(
        slice(v.start + 3, v.stop + 3) if v.stop - v.start < n else v for v, n in zip(view, frame.shape[1:3])
    )
    assert (model_input - resized(view)).abs().mean() < 0.015 < (model_input - resized(shifted)).abs().mean()
    assert model_view(VideoTransform(32, "resize"), height, width) == (slice(0, height), slice(0, width))
    assert model_view(VideoTransform(32, "center_square"), height, width) == view


def test_cyclic_inference_cannot_run_in_chunks(tiny_checkpoint):
    cyclic = load_trained_model(compose_run_config(tiny_checkpoint, ["model.cyclic_inference=true"]))
    check_chunking(cyclic, 4, 4)  # one chunk: fine
    with pytest.raises(ChunkingError, match=r"model.cyclic_inference=false.*chunk_size=11"):
        check_chunking(cyclic, 11, 4)
    with pytest.raises(ValueError, match="cyclic inference"):
        cyclic.processor(torch.zeros(1, 2, 4, 16), previous_slots=torch.zeros(1, NUM_SLOTS, 16))


@pytest.mark.slow
def test_a_corrupt_video_is_one_clear_line(tiny_checkpoint, tmp_path):
    good = write_mp4(tmp_path / "good.mp4", block_frames(5, 6), lossless=False).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good[: len(good) // 2])
    result = run_cli("predict.py", [f"ckpt_path={tiny_checkpoint}", f"video={corrupt}", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    assert "data error:" in result.stderr and str(corrupt) in result.stderr and "Traceback" not in result.stderr


def test_a_missing_checkpoint_says_where_it_looked(tmp_path):
    # predict.py reports this message as one line, as eval.py does (the same ocl.build.with_training_overrides).
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {tmp_path / 'nope.ckpt'}"):
        compose_run_config(tmp_path / "nope.ckpt")


# --- bad input: one clear line, nothing lost ----------------------------------------------------


def prediction_config(tiny_checkpoint: Path, video: Path, out: Path, *overrides: str):
    """The config of ``predict.py ckpt_path=<tiny> video=<video> out=<out> device=cpu progress=false <overrides>``."""
    return compose_run_config(
        tiny_checkpoint, [f"video={video}", f"out={out}", "device=cpu", "progress=false", *overrides]
    )


def test_an_out_folder_holding_a_prediction_is_refused_before_anything_is_decoded(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    first = write_mp4(tmp_path / "long.mp4", block_frames(1, 8), lossless=False)
    run_prediction(prediction_config(tiny_checkpoint, first, out, "chunk_size=8"))
    masks = sorted((out / "masks").iterdir())
    overlay = (out / "overlay.mp4").read_bytes()
    assert len(masks) == 8

    # A second video (here: one that does not exist, which decoding would report as a DataError)
    # into the same folder is refused, and the first prediction is left as it was.
    missing = tmp_path / "short.mp4"
    with pytest.raises(
        UsageError, match=rf"output folder {out} already holds a prediction.*choose another out= or delete it"
    ):
        run_prediction(prediction_config(tiny_checkpoint, missing, out))
    assert sorted((out / "masks").iterdir()) == masks and (out / "overlay.mp4").read_bytes() == overlay

    overlay_only = tmp_path / "overlay_only"
    overlay_only.mkdir()
    (overlay_only / "overlay.mp4").write_bytes(b"old")
    with pytest.raises(UsageError, match="already holds a prediction"):
        predict_video(None, missing, overlay_only, VideoTransform(32, "resize"))
    assert (overlay_only / "overlay.mp4").read_bytes() == b"old"

    # Other files (Hydra's .hydra/ and log in the default run folder), or an empty masks/, are no prediction.
    used = tmp_path / "used"
    (used / "masks").mkdir(parents=True)
    (used / "predict.log").write_text("log")
    assert prepare_out_dir(used) == used


def test_an_out_folder_that_cannot_be_created_is_one_clear_line(tiny_checkpoint, tmp_path):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "out"
    with pytest.raises(UsageError, match=rf"cannot create the output folder {out} .*choose another out=") as raised:
        run_prediction(prediction_config(tiny_checkpoint, tmp_path / "missing.mp4", out))
    assert "\n" not in str(raised.value)


def test_no_checkpoint_is_one_clear_line(tmp_path):
    video = tmp_path / "clip.mp4"  # never read
    cfg = compose_config([f"video={video}", f"paths.output_dir={tmp_path}"], name="predict")
    with pytest.raises(UsageError, match=r"^predict.py needs ckpt_path=<checkpoint>"):
        run_prediction(cfg)
    assert not (tmp_path / "masks").exists()
    cfg = compose_config([f"paths.output_dir={tmp_path}"], name="predict")
    with pytest.raises(UsageError, match=r"^predict.py needs ckpt_path="):
        run_prediction(cfg)


def test_a_cuda_device_without_cuda_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(UsageError, match=rf"device={name}: no CUDA device is available.*device=cpu or auto"):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UsageError, match=r"device=cuda:1: this machine has 1 CUDA device"):
        resolve_device("cuda:1")


def test_weights_of_another_model_are_one_clear_line(tiny_checkpoint):
    cfg = compose_run_config(tiny_checkpoint, ["experiment=slot_attention_synthetic"])
    with pytest.raises(CheckpointError) as raised:
        load_trained_model(cfg)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {tiny_checkpoint} does not fit this run's model")
    assert "written by experiment 'savi_synthetic', this run is 'slot_attention_synthetic'" in message
    assert "Unexpected key(s) in state_dict" in message and "\n" not in message


@pytest.mark.slow
def test_predict_py_prints_a_checkpoint_error_as_one_line(tiny_checkpoint, tmp_path):
    video = write_mp4(tmp_path / "clip.mp4", block_frames(2, 3), lossless=False)
    result = run_cli(
        "predict.py",
        [
            f"ckpt_path={tiny_checkpoint}",
            f"video={video}",
            "experiment=slot_attention_synthetic",
            f"paths.output_dir={tmp_path}",
        ],
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint {tiny_checkpoint} does not fit")
    assert not (tmp_path / "overlay.mp4").exists()
