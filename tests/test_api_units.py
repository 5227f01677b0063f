"""The service's building blocks on their own: settings, the job store, model discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_support import model_dir_with

from app.jobstore import JobStore
from app.registry import ModelRegistry, scan_model_dir
from app.settings import Settings


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TSSYNTH_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("TSSYNTH_MAX_SEQUENCES", "7")
    monkeypatch.setenv("TSSYNTH_DEMO_BOOTSTRAP", "false")
    monkeypatch.setenv("TSSYNTH_ADMIN_TOKEN", "s3cret")
    settings = Settings()
    assert settings.model_dir == tmp_path / "m"
    assert settings.max_sequences == 7
    assert settings.demo_bootstrap is False
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)  # a secret never reaches a log line through repr
    assert settings.job_db_path == tmp_path / "m" / "jobs.sqlite"


def test_blank_tokens_mean_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSSYNTH_ADMIN_TOKEN", "")
    monkeypatch.setenv("TSSYNTH_API_TOKEN", "  ")
    assert Settings().admin_token is None and Settings().api_token is None


def test_settings_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model_dir == Path("models")
    assert settings.default_model == "demo"
    assert settings.admin_token is None and settings.api_token is None
    assert settings.demo_bootstrap is True


def test_job_lifecycle_is_recorded_and_final_states_stick(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create("m", "dataset:a.csv", "/data/a.csv", {"training": {"max_steps": 5}})
    assert job.state == "queued" and job.overrides == {"training": {"max_steps": 5}}
    assert store.oldest_queued() == job
    assert store.mark_running(job.id)
    assert not store.mark_running(job.id)  # only a queued job can start
    store.update_progress(job.id, "diffusion", 3, 10, 0.5, 12.0)
    store.update_progress(job.id, "validate", 0, 1, None, None)
    running = store.require(job.id)
    assert (running.stage, running.step, running.total, running.eta_seconds) == ("validate", 0, 1, None)
    assert running.loss == 0.5  # a stage without a loss keeps the last one
    assert store.finish(job.id, "succeeded", version=3)
    assert not store.finish(job.id, "failed", "late")  # first final state wins
    done = store.require(job.id)
    assert (done.state, done.version, done.error) == ("succeeded", 3, None)
    assert store.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0}


def test_jobs_survive_reopening_and_interrupted_ones_fail(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    queued = store.create("a", "simulator", None, {})
    running = store.create("b", "simulator", None, {})
    store.mark_running(running.id)
    finished = store.create("c", "simulator", None, {})
    store.finish(finished.id, "cancelled", "cancelled before it started")

    reopened = JobStore(tmp_path / "jobs.sqlite")
    assert sorted(reopened.fail_interrupted()) == sorted([queued.id, running.id])
    assert "while this job was queued" in (reopened.require(queued.id).error or "")
    assert "while this job was running" in (reopened.require(running.id).error or "")
    assert reopened.require(finished.id).state == "cancelled"
    assert [job.id for job in reopened.list_jobs()] == [finished.id, running.id, queued.id]
    assert [job.id for job in reopened.list_jobs("failed")] == [running.id, queued.id]


def test_cancel_flag_is_shared_through_the_file(tmp_path: Path) -> None:
    job = JobStore(tmp_path / "j.sqlite").create("m", "simulator", None, {})
    other_handle = JobStore(tmp_path / "j.sqlite")
    assert not other_handle.cancel_requested(job.id)
    JobStore(tmp_path / "j.sqlite").request_cancel(job.id)
    assert other_handle.cancel_requested(job.id)


def _fake_bundle(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"files": {}}))


def test_scan_finds_versions_flat_bundles_and_ignores_the_rest(tmp_path: Path) -> None:
    _fake_bundle(tmp_path / "a" / "v1")
    _fake_bundle(tmp_path / "a" / "v10")
    (tmp_path / "a" / "v11").mkdir()  # half-written: no manifest
    _fake_bundle(tmp_path / "flat")  # tssynth train --out models/flat
    _fake_bundle(tmp_path / "flat" / "v2")
    _fake_bundle(tmp_path / ".staging" / "job")
    (tmp_path / "jobs.sqlite").write_text("")
    (tmp_path / "empty").mkdir()
    found = scan_model_dir(tmp_path)
    assert found == {
        "a": {1: tmp_path / "a" / "v1", 10: tmp_path / "a" / "v10"},
        "flat": {0: tmp_path / "flat", 2: tmp_path / "flat" / "v2"},
    }
    assert ModelRegistry(tmp_path).next_version("a") == 12  # the half-written v11 is never overwritten
    assert ModelRegistry(tmp_path).next_version("new") == 1


def test_broken_newest_version_falls_back_and_broken_models_are_skipped(tmp_path: Path) -> None:
    models = model_dir_with(tmp_path, "good", "broken")
    shutil_copy = models / "good" / "v2"
    _fake_bundle(shutil_copy)  # a v2 whose manifest lists no files and has no format version
    (models / "broken" / "v1" / "denoiser.safetensors").write_bytes(b"garbage")
    registry = ModelRegistry(models)
    registry.load_all()
    assert registry.names() == ["good"]
    served = registry.get("good")
    assert served.version == 1 and served.versions == (1, 2)


def test_install_swaps_the_served_object_but_not_ones_already_taken(tmp_path: Path) -> None:
    models = model_dir_with(tmp_path, "m")
    registry = ModelRegistry(models)
    registry.load_all()
    in_flight = registry.get("m")
    registry.install("m", 2, in_flight.bundle, models / "m" / "v2")
    assert registry.get("m").version == 2 and registry.get("m").versions == (1, 2)
    assert in_flight.version == 1  # a request that looked the model up earlier keeps its version


def test_serve_command_runs_the_app_factory_with_its_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    from model_core import cli

    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.delenv("TSSYNTH_MODEL_DIR", raising=False)
    monkeypatch.delenv("TSSYNTH_DEMO_BOOTSTRAP", raising=False)
    assert cli.main(["serve", "--port", "9999", "--model-dir", str(tmp_path), "--no-demo"]) == 0
    assert calls == [(("app.main:create_app",), {"factory": True, "host": "127.0.0.1", "port": 9999})]
    settings = Settings()
    assert settings.model_dir == tmp_path and settings.demo_bootstrap is False


def test_a_training_process_that_dies_fails_its_job_with_the_exit_code(tmp_path: Path) -> None:
    import asyncio

    from app.jobs import JobManager

    settings = Settings(model_dir=tmp_path, demo_bootstrap=False)
    store = JobStore(settings.job_db_path)
    manager = JobManager(store, ModelRegistry(tmp_path), settings)
    job = store.create("m", "simulator", None, {})
    store.mark_running(job.id)
    asyncio.run(manager._finalize(job.id, -9))  # what the supervisor does when the process is gone
    failed = store.require(job.id)
    assert failed.state == "failed"
    assert failed.error == "the training process exited unexpectedly (exit code -9)"
