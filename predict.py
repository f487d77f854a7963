"""Predict slot masks on any video: ``python predict.py ckpt_path=<ckpt> video=<file.mp4> [overrides]``.

The run's config is rebuilt from the training overrides stored in the checkpoint, as in
``eval.py``; the command line wins. Writes ``overlay.mp4`` and ``masks/<frame>.png`` (see
``configs/predict.yaml`` and the README).
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    from ocl.build import UsageError
    from ocl.data.errors import DataError, user_message
    from ocl.predict.video import run_prediction
    from ocl.utils.checkpoints import CheckpointError

    try:
        run_prediction(cfg)
    except DataError as error:
        raise SystemExit(user_message(error)) from None
    except (UsageError, CheckpointError) as error:  # e.g. no ckpt_path, a used out=, weights of another model
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    from ocl.build import with_training_overrides

    sys.argv = with_training_overrides(sys.argv)
    main()
