"""MLflow access: the fluent API pointed at a store for a block only, and MLflow's console output at INFO."""

from __future__ import annotations

import logging
import os

from include.mlops import tracking


def test_using_leaves_no_process_wide_tracking_uri(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.using(uri):
        assert mlflow.get_tracking_uri() == uri
        assert mlflow.get_registry_uri() == uri
    assert mlflow.get_tracking_uri() == before
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_mlflow_output_is_logged_at_info_not_written_to_stderr(capfd, caplog):
    import mlflow  # noqa: F401 (configures MLflow's own logger, as in a task)
    from mlflow.utils.logging_utils import eprint

    caplog.set_level(logging.INFO, logger="include.mlops.tracking")
    progress_bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    with tracking.mlflow_output_as_info():
        eprint("Created version '3' of model 'flights'.")
        logging.getLogger("mlflow.store").warning("a notice from MLflow's logger")
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert "Created version" not in capfd.readouterr().err
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "include.mlops.tracking"]
    assert ("INFO", "Created version '3' of model 'flights'.") in lines
    assert any("a notice from MLflow's logger" in text for level, text in lines if level == "INFO")
    assert os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR") == progress_bar


def test_experiments_open_in_the_model_training_view(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = tracking.client(uri)
    old = client.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    assert tracking.ensure_experiment(client, "made-before", None) == old
    new = tracking.ensure_experiment(client, "fresh", (tmp_path / "b").as_uri(), tags={"dataset": "flights"})
    for exp_id in (old, new):
        assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(new).tags["dataset"] == "flights"
