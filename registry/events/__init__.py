"""The event feed: a transactional outbox (outbox.py), its payloads (payloads.py,
schemas.py), the feed's reads (service.py, repository.py) and its long-poll (feed.py)."""
