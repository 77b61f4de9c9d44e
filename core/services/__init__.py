"""The service layer: each function is one use case.

A service adds rows and events to the unit of work it is given and never commits: whoever opened
the unit of work (a request, a device message, a sweep) commits it, once.
"""
