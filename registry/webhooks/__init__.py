"""Signed webhooks on the event outbox: subscriptions, safe delivery, dispatch by workers."""
