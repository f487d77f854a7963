"""Evaluate a checkpoint: ``python eval.py ckpt_path=<ckpt> [overrides]`` (see README).

The run's config is rebuilt from the training overrides stored in the checkpoint, placed
before the command line's, so Hydra composes (and checks) both and the command line wins:
``python eval.py ckpt_path=... model.encoder.weights=... data=davis2017`` works for any method.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from ocl.cli import UsageError, evaluate
    from ocl.data.errors import DataError, user_message
    from ocl.data.sampling import ShardingError

    try:
        evaluate(cfg)
    except DataError as error:
        raise SystemExit(user_message(error)) from None
    except (UsageError, ShardingError) as error:
        raise SystemExit(f"error: {error}") from None


def with_training_overrides(argv: list[str]) -> list[str]:
    """``argv`` with the checkpoint's stored training overrides inserted before the user's.

    Overrides already in ``argv`` are not inserted again: a DDP run (``trainer=ddp``) starts its
    other ranks with this process's ``argv``, which already holds them."""
    from ocl.cli import replayed_overrides

    checkpoints = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("ckpt_path=")]
    if not checkpoints:
        return argv  # Hydra reports the missing ckpt_path
    try:
        stored = replayed_overrides(checkpoints[-1], argv[1:])
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return [argv[0], *(o for o in stored if o not in argv[1:]), *argv[1:]]


if __name__ == "__main__":
    sys.argv = with_training_overrides(sys.argv)
    main()
