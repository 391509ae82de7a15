"""Shared test configuration. End-to-end tests are marked ``e2e`` (see pyproject.toml)."""
