"""Agent definitions turned into voice pipelines."""
