"""NATS as the broker: the local cluster launcher (`cluster.py`) and the auth-callout responder."""


class CalloutUnavailable(RuntimeError):
    """The responder cannot log in to the cluster (down, wrong URL, wrong credentials): one line.

    Here, not in `responder.py`, so a command can catch it without importing nats-py (the `nats` extra)."""
