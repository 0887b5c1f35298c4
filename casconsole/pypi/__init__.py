"""The PyPI subset mirror (docs/pypi.md): a simple-index client, the selection and its closure,
the plan, the project pages, and the section a sync carries for it."""
