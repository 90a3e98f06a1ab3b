"""`netdsl import`: existing manifests -> `.seg` that is proven to mean the same (see model.py)."""
