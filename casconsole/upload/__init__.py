"""cas-upload: publish conda packages into a channel of a cas-server over HTTP."""
