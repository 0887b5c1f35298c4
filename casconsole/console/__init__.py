"""The Textual console: the app shell, the session (no UI) and one module per screen."""
