"""The core of orderbus: domain rules, models, the unit of work, services, events, tokens and topics.

It imports nothing of `api`, `broker`, `bridge`, `devices` or `cli`: they all build on it.
"""
