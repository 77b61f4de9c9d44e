"""Pure rules, free of the database and of MQTT: what devices report (scale readings, printer status),
and payments (`payments`: what "paid" means, what may be refunded).

A rule that refuses a report raises `core.domain.Invalid` with a machine `reason`; the bridge,
which reads the reports off the bus, answers the device with that reason.
"""
