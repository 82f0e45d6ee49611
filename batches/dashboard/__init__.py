"""The operators' dashboard: server-rendered pages for staff over the same services as the API."""
