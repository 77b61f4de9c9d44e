"""The service layer: each function is one use case inside one unit of work."""
