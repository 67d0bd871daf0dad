"""The runtime's routes, one module per resource."""
