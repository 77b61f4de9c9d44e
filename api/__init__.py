"""The HTTP API: models, domain rules, service layer, routers and token issuance."""
