"""cas-installer: self-extracting offline installers built from the mirror's channels.

`construct.py` reads `my-installer.yaml`; `channels.py` fetches the channels' repodata (through
`upstream/`); `solve.py` solves with py-rattler; `fetch.py` takes and checks the packages;
`pack.py` rewrites each one for a target with sh, tar and gzip only (`placeholders.py` plans the
prefix replacement); `script.py` writes the file (`installer.sh` is the shell part);
`build.py` runs it all with progress events; `listing.py` lists the installers built.
"""
