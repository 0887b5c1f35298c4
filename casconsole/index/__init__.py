"""cas-index: `conda index` for channel folders, incremental."""
