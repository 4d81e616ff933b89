"""Experiments shipped as commands (`lifelong reproduce TARGET`)."""
