"""The runtime: the Starlette service that deploys instances, receives webhooks and runs flows.

It builds on ``pagerduty_connector.component`` and is never imported by it.
"""
