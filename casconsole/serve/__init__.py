"""cas-server: supervisor, HTTP, the site, tokens, the nginx configuration."""
