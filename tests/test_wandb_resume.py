"""A run restarted in its folder (requeue, automatic resume) continues the same W&B run."""

import wandb

from ocl.utils.loggers import folder_run_id, make_wandb_logger


def test_restarts_in_a_folder_continue_one_wandb_run_and_new_folders_start_another(tmp_path):
    wandb.finish()  # a run left open by an earlier test would be reused
    ids = []
    for folder in (tmp_path / "run", tmp_path / "run", tmp_path / "other"):
        logger = make_wandb_logger("ocl-test", str(folder), experiment="savi_synthetic", seed=0, mode="offline")
        ids.append(logger.experiment.id)
        wandb.finish()
    assert ids[0] == ids[1] == folder_run_id(tmp_path / "run")
    assert ids[2] != ids[0]
