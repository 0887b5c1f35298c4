"""casconsole: an on-premises conda channel mirror administered from the terminal."""

__version__ = "0.1.0"
