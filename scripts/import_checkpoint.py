"""Import a checkpoint the authors released into ocl, to evaluate or predict with it as with any run's.

    python scripts/import_checkpoint.py --from videosaur --experiment videosaur_movi_c \\
        step=100000.ckpt videosaur_movi_c.ckpt
    python eval.py ckpt_path=videosaur_movi_c.ckpt

The recipe experiment's model is built (random encoder weights: nothing is downloaded), the file's
weights are renamed into it (``ocl.published``) and it is written as ``train.py`` writes its
checkpoints: ``eval.py`` and ``predict.py`` rebuild the model from ``experiment=<recipe>`` and the
overrides given here. A frozen pretrained ViT is left out, with the fingerprint of the file's ViT:
``eval.py`` loads the ViT from ``model.encoder.weights`` (the hub, or a file such as the one
``--encoder-out`` writes) and checks that it is the one the checkpoint was trained with. Families
and where their files are published: docs/data.md, "Published checkpoints".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import lightning
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ocl.build import build_model
from ocl.methods.encoder_weights import FINGERPRINT_KEY
from ocl.modules.vit import RANDOM
from ocl.published import LAYOUTS, Layout, LayoutMismatch, convert_state_dict, their_state_dict, their_vit_weights

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
STEP_KEYS = ("global_step", "iteration", "total_step")
"""Where the families' files record their training step (Lightning, SMTC, SLASH)."""


class ImportFailure(RuntimeError):
    """The command cannot import the file; the message says why in one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="family", required=True, choices=sorted(LAYOUTS), help="whose file it is")
    parser.add_argument("--experiment", required=True, help="the ocl recipe it was trained as, e.g. videosaur_movi_c")
    parser.add_argument(
        "--encoder-out",
        type=Path,
        help="also write the file's ViT as a timm state dict, for model.encoder.weights=<file>",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read a file that needs pickled objects (weights_only=False runs the file's code: trusted files only)",
    )
    parser.add_argument("theirs", type=Path, help="the authors' checkpoint file")
    parser.add_argument("out", type=Path, help="the ocl checkpoint to write (.ckpt)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides after experiment=<recipe> (a model trained with other sizes)"
    )
    return parser.parse_args(argv)


def read_file(path: Path, trust_pickle: bool) -> Any:
    """The object ``torch.save`` wrote to ``path`` (tensors on the CPU)."""
    if not path.is_file():
        raise ImportFailure(f"checkpoint not found: {path.resolve()}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # torch raises many kinds (pickle, zip, runtime) for unreadable files
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        unsafe = [line.split(" was not an allowed global")[0] for line in lines if "WeightsUnpickler error" in line]
        if unsafe:  # a readable file holding objects that weights_only=True refuses
            raise ImportFailure(
                f"torch cannot read {path} with weights_only=True ({unsafe[0]}); if you trust the file: --trust-pickle"
            ) from error
        raise ImportFailure(f"torch cannot read {path}: {lines[0]}") from error


def compose_recipe(experiment: str, overrides: list[str]) -> DictConfig:
    """The config ``python train.py experiment=<experiment> <overrides>`` runs."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=[f"experiment={experiment}", *overrides])
    except HydraException as error:
        raise ImportFailure(f"cannot compose experiment={experiment}: {str(error).strip().splitlines()[0]}") from error


def imported_checkpoint(layout: Layout, their_file: Any, cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """An ocl checkpoint of ``cfg``'s model holding the weights of ``their_file`` (the loaded file),
    written as ``train.py`` writes one. Its ``ocl`` record holds ``overrides``, plus
    ``model.encoder.weights=random`` where the checkpoint holds a fine-tuned ViT (nothing to
    download to rebuild it)."""
    pretrained_vit = "weights" in cfg.model.encoder and cfg.model.encoder.weights != RANDOM
    random_vit = cfg.copy()
    if pretrained_vit:
        random_vit.model.encoder.weights = RANDOM  # the file's weights replace them
    model = build_model(random_vit)
    model.load_state_dict(convert_state_dict(layout, their_state_dict(layout, their_file), model))
    if pretrained_vit and not model.encoder.trainable:
        model.encoder.pretrained = True  # it holds the file's pretrained ViT: left out, fingerprinted
    elif pretrained_vit:
        cfg, overrides = random_vit, [*overrides, f"model.encoder.weights={RANDOM}"]
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "epoch": int(their_file.get("epoch") or 0),
        "global_step": _their_step(their_file),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # as in training
    checkpoint["ocl"] = {"overrides": overrides, "config": OmegaConf.to_container(cfg, resolve=True)}
    return checkpoint


def _their_step(their_file: dict[str, Any]) -> int:
    return next((int(their_file[key]) for key in STEP_KEYS if key in their_file), 0)


def main(argv: list[str] | None = None) -> int:
    """Import the file; print the error in one line and return 1 if it cannot be imported."""
    args = parse_args(argv)
    layout = LAYOUTS[args.family]
    try:
        their_file = read_file(args.theirs, args.trust_pickle)
        try:
            vit = their_vit_weights(layout, their_state_dict(layout, their_file))
            if args.encoder_out is not None and not vit:
                raise ImportFailure(f"--encoder-out: {layout.title} files hold no ViT")
            cfg = compose_recipe(args.experiment, args.overrides)
            cfg.paths.output_dir = str(args.out.resolve().parent)  # for the config record; nothing is written there
            overrides = [f"experiment={args.experiment}", *args.overrides]
            checkpoint = imported_checkpoint(layout, their_file, cfg, overrides)
        except LayoutMismatch as error:
            raise ImportFailure(
                f"{args.theirs} does not fit experiment {args.experiment} as a --from {layout.name} file: {error}"
            ) from error
    except ImportFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.out)
    step = checkpoint["global_step"]
    print(f"{args.out}: {layout.title} weights of {args.theirs} (step {step}) as {args.experiment}")
    if FINGERPRINT_KEY in checkpoint:
        print("the frozen ViT is left out; eval.py loads model.encoder.weights and checks it against the file's ViT")
    elif vit:
        print("the file's fine-tuned ViT is in the checkpoint (stored override model.encoder.weights=random)")
    if args.encoder_out is not None:
        args.encoder_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({key: value.clone() for key, value in vit.items()}, args.encoder_out)
        print(f"{args.encoder_out}: the file's ViT; use it with model.encoder.weights={args.encoder_out}")
    print(f"evaluate: python eval.py ckpt_path={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
