"""Data sources: picklists a builder chooses from when configuring a step."""
