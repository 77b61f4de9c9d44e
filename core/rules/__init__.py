"""The rules for what devices report (scale readings, printer status), free of the database and of MQTT.

A rule that refuses a report raises `core.domain.Invalid` with a machine `reason`; the bridge,
which reads the reports off the bus, answers the device with that reason.
"""
