"""Webhooks: endpoints an organization registers, and the delivery of its events to them,
signed, retried on API.md's schedule, and never lost (the deliveries are the outbox)."""
