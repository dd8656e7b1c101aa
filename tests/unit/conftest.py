"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def small_spec(spec):
    """The flights spec with a 3-week-friendly split and a light search, so a training run takes seconds."""
    candidates = [
        spec.training.candidates[0],
        spec.training.candidates[1].model_copy(update={"params": {"max_iter": 60, "learning_rate": 0.1}}),
    ]
    training = spec.training.model_copy(
        update={
            "validation_days": 4,
            "test_days": 4,
            "search_iterations": 2,
            "reference_sample_rows": 500,
            "candidates": candidates,
        }
    )
    return spec.model_copy(update={"training": training})
