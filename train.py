"""Train a method: ``python train.py experiment=<name> [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from ocl.build import UsageError
    from ocl.callbacks.preemption import RunPreempted
    from ocl.cli import train
    from ocl.data.errors import DataError, user_message
    from ocl.data.sampling import ShardingError
    from ocl.methods.base import NonFiniteLossError
    from ocl.utils.checkpoints import CheckpointError
    from ocl.utils.config_values import ConfigValueError

    try:
        metrics = train(cfg, list(HydraConfig.get().overrides.task))
    except DataError as error:
        raise SystemExit(user_message(error)) from None
    except RunPreempted as stop:
        raise SystemExit(str(stop)) from None
    except (UsageError, ShardingError, CheckpointError, ConfigValueError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}") from None
    return metrics.get("val/video_fg_ari")


if __name__ == "__main__":
    main()
