"""A stand-in PagerDuty for trying the connector and the runtime without an account.

``pdc mock`` serves it (like ``stripe-mock``); the tests and benchmarks start it in
a thread. It answers the REST endpoints the quickstart and the benchmarks use,
keeps webhook subscriptions statefully, and records every request it received.
"""
