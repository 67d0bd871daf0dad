"""The framework: manifest models, the PagerDuty client, the requester and the CLI."""
