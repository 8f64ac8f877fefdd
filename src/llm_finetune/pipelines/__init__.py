"""Kedro pipelines of the project."""
