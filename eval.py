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
    from ocl.build import UsageError
    from ocl.cli import evaluate
    from ocl.data.errors import DataError, user_message
    from ocl.data.sampling import ShardingError
    from ocl.utils.checkpoints import CheckpointError
    from ocl.utils.config_values import ConfigValueError

    try:
        evaluate(cfg)
    except DataError as error:
        raise SystemExit(user_message(error)) from None
    except (UsageError, ShardingError, CheckpointError, ConfigValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    from ocl.build import with_training_overrides

    sys.argv = with_training_overrides(sys.argv)
    main()
