"""The `orderbus` command and the composition root that wires broker, API and bridge together."""
