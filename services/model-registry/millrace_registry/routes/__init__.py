"""The registry's HTTP routes, one module per resource."""
