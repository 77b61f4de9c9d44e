"""Alembic's migration environment: `env.py` and the revisions in `versions/`, driven by `core.db`."""
