"""Train a method: ``python train.py experiment=<name> [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from ocl.cli import train

    metrics = train(cfg, list(HydraConfig.get().overrides.task))
    return metrics.get("val/video_fg_ari")


if __name__ == "__main__":
    main()
