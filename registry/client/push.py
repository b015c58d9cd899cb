"""A push that resumes, and tolerates a concurrent push of the same files.

It declares its files, sends only those the server's draft lacks and finalizes guarded
by the declaration; when another run of the same push finalized or dropped the draft
first, it answers with that version. The protocol: docs/architecture.md, "Data flow" (Drafts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.client.api import DeltahubClient
from registry.client.errors import ClientError

Say = Callable[[str], None]  # a line for the user (resumed, restarted, ...)
# Sends `paths` to the draft `owner` (/adapters/<id> or /models/<name>); the CLI's draws
# a progress bar.
UploadAll = Callable[[DeltahubClient, str, list[Path], dict[str, str]], None]
Draft = dict[str, Any]


def upload_plainly(client: DeltahubClient, owner: str, paths: list[Path],
                   digests: dict[str, str]) -> None:
    for path in paths:
        client.upload(owner, path, digests[path.name])


class Push:
    """The files of one directory, pushed as a model, an adapter or a data set."""

    def __init__(self, client: DeltahubClient, paths: list[Path], digests: dict[str, str],
                 *, say: Say = lambda _: None, upload_all: UploadAll = upload_plainly) -> None:
        self.client = client
        self.paths = paths
        self.digests = digests
        self.say = say
        self.upload_all = upload_all
        self.sent: list[str] = []  # the files this push uploaded

    def adapter(self, name: str, base: str, kind: str, source: str | None = None
                ) -> tuple[Draft, bool]:
        """The adapter version, and whether this push made it (False: identical content
        was registered already)."""
        client = self.client
        return self._run(
            start=lambda: client.create_adapter(name, base, kind, source, self.digests),
            discard=lambda draft: client.delete_adapter(draft["id"]),
            owner=lambda draft: f"/adapters/{draft['id']}",
            finalize=lambda draft: client.finalize_adapter(draft["id"], self.digests))

    def model(self, name: str, base: str | None = None,
              quantized_from: str | None = None) -> tuple[Draft, bool]:
        """The finalized model, and whether this push finalized it (False: the same files
        were registered under the name already; `sent` then names the tokenizer files
        this push added to it)."""
        client = self.client
        return self._run_final(
            start=lambda: client.create_model(name, base, self.digests, quantized_from),
            discard=lambda draft: client.delete_model(draft["name"]),
            owner=lambda draft: f"/models/{draft['name']}",
            finalize=lambda draft: client.finalize_model(draft["name"], self.digests))

    def dataset(self, name: str, description: str | None = None) -> tuple[Draft, bool]:
        """The finalized data set, and whether this push finalized it (False: the same
        files were registered under the name already)."""
        client = self.client
        return self._run_final(
            start=lambda: client.create_dataset(name, description, self.digests),
            discard=lambda draft: client.delete_dataset(draft["name"]),
            owner=lambda draft: f"/datasets/{draft['name']}",
            finalize=lambda draft: client.finalize_dataset(draft["name"], self.digests))

    def _run_final(self, start: Callable[[], Draft], discard: Callable[[Draft], None],
                   owner: Callable[[Draft], str],
                   finalize: Callable[[Draft], Draft]) -> tuple[Draft, bool]:
        """`_run` for owners (models, data sets) whose push of content already registered
        is answered with the finalized owner itself: this push made it unless so."""
        started: list[Draft] = []

        def remembered() -> Draft:
            started.append(start())
            return started[-1]

        final, _ = self._run(start=remembered, discard=discard, owner=owner,
                             finalize=lambda draft: (finalize(draft), True))
        return final, started[-1]["status"] != "ready"

    def _run(self, start: Callable[[], Draft], discard: Callable[[Draft], None],
             owner: Callable[[Draft], str],
             finalize: Callable[[Draft], tuple[Draft, bool]]) -> tuple[Draft, bool]:
        for attempt in (1, 2):
            draft = self._draft(start, discard)
            try:
                self._send_missing(owner(draft), draft)
                return finalize(draft)
            except ClientError as exc:
                if exc.status != 404 or attempt == 2:
                    raise
                self.say("another push of the same files registered them meanwhile; "
                         "starting again to find that version")
        raise AssertionError("unreachable")  # the loop returns or raises

    def _draft(self, start: Callable[[], Draft], discard: Callable[[Draft], None]) -> Draft:
        draft = start()
        stale = sorted({f["filename"] for f in draft["files"]} - set(self.digests))
        if stale:
            # A draft started without a declaration (an older client) holding files this
            # directory does not have: the guarded finalize would refuse it.
            self.say(f"discarding an earlier draft holding {', '.join(stale)}")
            discard(draft)
            draft = start()
        kept = sum(self.digests.get(f["filename"]) == f["sha256"] for f in draft["files"])
        if kept:
            self.say(f"resuming: {kept} of {len(self.digests)} files already uploaded")
        return draft

    def _send_missing(self, owner: str, draft: Draft) -> None:
        held = {f["filename"]: f["sha256"] for f in draft["files"]}
        todo = [p for p in self.paths if held.get(p.name) != self.digests[p.name]]
        if not todo:
            return
        try:
            self.upload_all(self.client, owner, todo, self.digests)
            self.sent += [p.name for p in todo]
        except ClientError as exc:
            if exc.error != "NotPending":
                raise
            # Another run of this push finalized the draft: the finalize returns it.
