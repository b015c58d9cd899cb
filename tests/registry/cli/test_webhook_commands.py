"""`deltahub webhooks add|ls|test|deliveries|rm`."""

from __future__ import annotations

import json

import pytest

from registry.webhooks.dispatcher import Dispatcher
from tests.conftest import Tokens
from tests.registry.cli.conftest import Cli


def test_webhooks_commands(cli: Cli, tokens: Tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    app = cli.server.app
    monkeypatch.setattr(app.state.settings, "WEBHOOK_ALLOW_PRIVATE", True)
    added = cli("webhooks", "add", "http://127.0.0.1:9/hook", "--events",
                "alias.set,alias.removed", "--alias", "prod")
    assert added.exit_code == 0, added.output
    assert "secret: whsec_" in added.stdout
    listed = json.loads(cli("webhooks", "ls", "--json").stdout)
    assert [(h["url"], h["events"], h["filters"]["alias"]) for h in listed] == [
        ("http://127.0.0.1:9/hook", ["alias.set", "alias.removed"], "prod")]
    assert "alias.set,alias.removed" in cli("webhooks", "ls").stdout
    hook = listed[0]["id"]

    assert cli("webhooks", "test", str(hook)).exit_code == 0
    # Port 9 (discard) is closed on loopback: the attempt fails and is logged.
    Dispatcher(app.state.database, app.state.settings, "cli-test").run_once()
    log = cli("webhooks", "deliveries", str(hook))
    assert log.exit_code == 0, log.output
    assert "webhook.test" in log.stdout
    assert "retrying" in log.stdout  # the attempt failed; another is scheduled
    assert json.loads(cli("webhooks", "deliveries", str(hook), "--json").stdout)[0][
        "error"]

    refused = cli("webhooks", "add", "ftp://example.com/x")
    assert refused.exit_code == 1
    assert "WebhookTargetRefused" in refused.output
    assert cli.as_token(tokens.read)("webhooks", "ls").exit_code != 0
    assert cli("webhooks", "rm", str(hook)).exit_code == 0
    assert json.loads(cli("webhooks", "ls", "--json").stdout) == []
