"""Command-line entry points (argparse); each `main` returns an exit status."""
