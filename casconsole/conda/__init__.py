"""Conda formats: repodata, package archives, match specs and versions."""
