"""Accepting a training request: everything that can be checked is checked before a job exists.

A job that fails ten seconds in because of a typo in the overrides or a text cell in row 900 wastes
a queue slot and tells the caller late; so the overrides are validated as a whole config (including
whether a requested CUDA device exists) and the table goes through ``training_table``, the very
checks ``train`` starts with, before the 202.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import UploadFile

from app.errors import ApiError
from app.jobstore import Job
from app.registry import MODEL_NAME
from app.services import Services
from app.uploads import dataset_path, load_table
from model_core.config import ConfigError, TSSynthConfig
from model_core.train import resolve_device, training_table


async def submit_training(
    deps: Services, model: str, overrides_text: str, file: UploadFile | None, dataset: str | None
) -> Job:
    if not MODEL_NAME.match(model):
        raise ApiError(
            422,
            "validation_error",
            f"invalid model name '{model}': use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit",
        )
    overrides = parse_overrides(overrides_text)
    config = TSSynthConfig().with_overrides(overrides)
    try:
        resolve_device(config.training.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    frame, content, source = await load_table(deps.pool, deps.settings, "training", file, dataset)
    await deps.pool.run(training_table, frame, config)
    if content is not None:
        data_path = deps.jobs.save_upload(content)
    else:
        assert dataset is not None
        data_path = dataset_path(deps.settings, dataset)
    return deps.jobs.submit(model, source, data_path, overrides)


def parse_overrides(text: str) -> dict[str, Any]:
    try:
        overrides = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"overrides are not valid JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise ConfigError("overrides must be a JSON object, e.g. {\"training\": {\"max_steps\": 500}}")
    return overrides
