"""The batch domain: models, services, the worker engine and the HTTP API."""
