"""Air-gap transfer: the mirror's state, verified update bundles split into volumes, signatures.

    state = scan_mirror(mirror_dir)                 # every file: path, size, sha256 (state.py)
    plan = plan_export(mirror_dir, target, base)    # what the other side lacks (export.py)
    stats = run_export(plan, sink)                  # volumes, then manifest.json (+ .sig)
    bundle = open_bundle(folder, trusted_key)       # parsed strictly, signature checked (bundle.py)
    stats = run_import(mirror_dir, bundle, sink)    # checked whole, then files, index, deletions

The format is described in docs/airgap.md.
"""
