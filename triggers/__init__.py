"""Webhook triggers backed by PagerDuty V3 webhook subscriptions."""
