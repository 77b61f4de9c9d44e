"""The joint between the database and the broker: the outbox relay and device ingest."""
