"""Use-case modules: what a dataset's spec cannot declare (a seed loader, a ``function`` feature) lives in
``include/datasets/<name>.py``, named by the spec. The platform library (include/mlops) never imports them by
name."""
