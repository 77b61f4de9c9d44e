"""Device agents and simulators: ordinary MQTT clients of the bus (docs/devices.md)."""
