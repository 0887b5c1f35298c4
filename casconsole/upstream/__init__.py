"""The network policy (proxy, TLS, timeouts, retries) and the only upstream repodata fetcher."""
