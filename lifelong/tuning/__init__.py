"""Hyperparameter tuning (`lifelong tune`, Optuna underneath) and the reality-check protocol.

Nothing here imports Optuna at import time: only the tune command and its workers load it."""
