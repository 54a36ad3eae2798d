"""The steps: plain functions `run_<step>(config) -> result` that the CLI, MLproject,
pipelines, tuning trials and tests call in-process."""
