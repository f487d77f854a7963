"""Evaluate a checkpoint: ``python eval.py ckpt_path=<ckpt> [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from ocl.cli import evaluate

    evaluate(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
