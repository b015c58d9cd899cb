"""Layer 2: settings, SQL registry, object storage, auth, HTTP API and CLI."""
