"""Reusable Textual widgets, installed as casconsole.widgets."""
