"""A Hydra callback that creates the run folder itself, so that a folder that cannot be created
(``hydra.run.dir`` under a file, on a read-only or missing mount, without permission) stops the
command with one line instead of Hydra's chained traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CreateRunFolder(Callback):
    """Before a single run starts: create ``hydra.run.dir`` (what Hydra would do next) or exit with
    ``error: cannot create the run folder ...``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            raise SystemExit(
                f"error: cannot create the run folder {folder} (hydra.run.dir): {reason}; choose another hydra.run.dir"
            ) from None
