"""Which events a webhook subscribes to: its event types and its filters."""

from __future__ import annotations

from registry.tables import Event, Webhook


def matches(webhook: Webhook, event: Event) -> bool:
    if webhook.events and event.type not in webhook.events:
        return False
    if webhook.filter_base is not None and event.base != webhook.filter_base:
        return False
    if webhook.filter_name is not None and event.name != webhook.filter_name:
        return False
    return webhook.filter_alias is None or event.data.get("alias") == webhook.filter_alias
