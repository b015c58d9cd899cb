"""`deltahub events`: lines or JSON lines, and --follow resuming from its saved cursor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fastapi import FastAPI

from registry.auth.service import create_token, revoke_token
from tests.registry.cli.conftest import Cli


def _revoke(app: FastAPI, *names: str) -> None:
    for name in names:
        with app.state.database.writing() as session:
            token = create_token(session, name, ["read"]).token
        with app.state.database.writing() as session:
            revoke_token(session, token.id)


def test_events_as_json_lines_and_as_lines(cli: Cli) -> None:
    _revoke(cli.server.app, "a", "b")
    result = cli("events", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["data"]["name"]) for e in lines] == [
        ("token.revoked", "a"), ("token.revoked", "b")]
    after = cli("events", "--json", "--after", str(lines[0]["id"]), "--name", "b")
    assert [json.loads(line)["data"]["name"] for line in after.stdout.splitlines()] == ["b"]
    human = cli("events", "--types", "token.revoked")
    assert human.exit_code == 0, human.output
    assert len(human.stdout.splitlines()) == 2
    assert "token.revoked" in human.stdout.splitlines()[0]
    bad = cli("events", "--types", "nope")
    assert bad.exit_code == 1
    assert "InvalidRequest" in bad.output


def test_follow_resumes_from_its_saved_cursor(cli: Cli, tmp_path: Path) -> None:
    app = cli.server.app
    env = {"DELTAHUB_STATE_DIR": str(tmp_path / "state")}
    _revoke(app, "first", "second")
    one = cli("events", "--follow", "--json", "--count", "1", env=env)
    assert one.exit_code == 0, one.output
    assert [json.loads(x)["data"]["name"] for x in one.stdout.splitlines()] == ["first"]
    # Started again, it goes on after what it printed: the next one is waiting already.
    two = cli("events", "--follow", "--json", "--count", "1", env=env)
    assert [json.loads(x)["data"]["name"] for x in two.stdout.splitlines()] == ["second"]

    # Nothing new yet: the follower long-polls until an event commits.
    def later() -> None:
        time.sleep(1.0)
        _revoke(app, "third")

    pusher = threading.Thread(target=later)
    pusher.start()
    three = cli("events", "--follow", "--json", "--count", "1", env=env)
    pusher.join()
    assert [json.loads(x)["data"]["name"] for x in three.stdout.splitlines()] == ["third"]
    assert len(list((tmp_path / "state").glob("events-*.cursor"))) == 1


def test_ctrl_c_stops_a_follower_with_one_line(cli: Cli, tmp_path: Path) -> None:
    app = cli.server.app
    _revoke(app, "seen")
    env = {**os.environ, **cli.env, "DELTAHUB_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "PYTHONUNBUFFERED": "1"}
    follower = subprocess.Popen(
        [sys.executable, "-c", "from registry.cli.app import main; main()", "events",
         "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    try:
        # Its first poll (after=0) also counts as waiting for a moment: only once the
        # event is printed is the follower's long-poll the one the server holds.
        first = follower.stdout.readline()
        deadline = time.monotonic() + 30
        while app.state.event_feed.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has printed what there was and long-polls
        assert app.state.event_feed.waiting == 1
        follower.send_signal(signal.SIGINT)
        rest, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    out = first + rest
    assert "token.revoked" in out
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert err.startswith("stopped following at event 1 (saved in ")
    assert [p.read_text() for p in (tmp_path / "state").glob("*.cursor")] == ["1\n"]
    # The server notices its client went away and stops waiting for it.
    deadline = time.monotonic() + 10
    while app.state.event_feed.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.event_feed.waiting == 0
