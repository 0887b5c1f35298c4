"""The sync: engine, download workers, verified-file store, lock, status log, report."""
