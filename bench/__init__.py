"""Performance harness: ``python -m bench`` (see bench/README.md)."""
