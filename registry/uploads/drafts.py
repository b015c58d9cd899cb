"""The rules a pending draft (a push not yet finalized) follows: models, adapters, data sets.

A draft remembers the token that started it, when a push last touched it, and the files
the push declared. The same token re-running its push resumes its draft (adapters: only
for the same declared files); a draft no push touches for `DRAFT_TTL_SECONDS` is
abandoned, and `deltahub gc` removes it (registry/gc/stale_drafts.py). Deleting a draft
needs only `push`; deleting a finalized model or version needs `admin`.
docs/architecture.md ("Drafts") says why each rule is so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping

from registry.auth.tokens import Scope, grants
from registry.errors import APIError, DraftChanged, Forbidden, Unprocessable
from registry.names import check_filename
from registry.tables import (
    Adapter,
    AdapterFile,
    Dataset,
    DatasetFile,
    Model,
    ModelFile,
    Status,
    utcnow,
)
from registry.uploads.flow import Uploaded

Draft = Model | Adapter | Dataset


def owns(draft: Draft, token_id: int | None) -> bool:
    """Whether a push by `token_id` may resume `draft`.

    Only the token that started it: resuming is implicit, so it must never let two
    pipelines write into one draft at once. A draft with no recorded creator (started
    before creators were recorded) belongs to whoever comes back for it.
    """
    return draft.created_by_token_id is None or draft.created_by_token_id == token_id


def files_digest(files: Mapping[str, str]) -> str:
    """The identity of a set of files (name -> sha256): an adapter's content digest, and
    what a push declares it will upload."""
    canonical = json.dumps(sorted((name, sha256.lower()) for name, sha256 in files.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_declared(files: Mapping[str, str] | None,
                   rule: Callable[[str], object]) -> str | None:
    """The digest of the files a push declares (None when it declares none), once each
    name passed `rule` (the owner's file rule), so a push that would be refused stores
    nothing. A refusal is a 422 here: the request names the file, it sends no content.
    """
    if files is None:
        return None
    for name in files:
        try:
            rule(name)
        except APIError as exc:
            if exc.status_code < 500:
                raise Unprocessable(f"'files' names a file that would be refused: "
                                    f"{exc.detail}", name=exc.name) from exc
            raise
    return files_digest(files)


def same_files(draft: Draft, digest: str | None) -> bool:
    """Whether a push declaring files with `digest` may resume `draft` (a push or a draft
    that declared nothing matches any files)."""
    return digest is None or draft.declared_digest in (None, digest)


def repushed(held: Iterable[ModelFile | AdapterFile | DatasetFile],
             declared: Mapping[str, str] | None,
             may_add: Callable[[str], bool] = lambda _: False) -> bool:
    """Whether a push declaring `declared` (name -> sha256) is a re-push of the finalized
    owner holding `held`: every held file declared with its bytes, and any other declared
    file one the owner may still gain (`may_add`: a model's tokenizer files). Such a push
    finds the owner, and its upload sends only the files it adds."""
    if declared is None:
        return False
    wanted = {name: sha256.lower() for name, sha256 in declared.items()}
    files = {f.filename: f.sha256 for f in held}
    return (all(wanted.get(name) == sha256 for name, sha256 in files.items())
            and all(may_add(name) for name in wanted.keys() - files.keys()))


def held_upload(draft: Draft, filename: str, sha256: str | None) -> Uploaded | None:
    """An upload of `filename` answered as done, when `draft` was finalized (by another
    run of the same push) holding exactly the bytes the client declares (`sha256`)."""
    if draft.status is not Status.READY or sha256 is None:
        return None
    held = next((f for f in draft.files
                 if f.filename == filename and f.sha256 == sha256.lower()), None)
    return None if held is None else Uploaded(held.sha256, held.size, new=False)


def touch(draft: Draft) -> None:
    """Mark `draft` as worked on now, so stale-draft removal leaves it alone."""
    draft.touched_at = utcnow()


def check_may_delete(status: Status, scopes: Iterable[str], what: str) -> None:
    """A pending draft holds nothing anyone relies on: `push` may delete it (push tokens
    already create versions and move aliases). A finalized one needs `admin`."""
    if status is Status.READY and not grants(scopes, Scope.ADMIN):
        raise Forbidden(f"{what} is finalized; deleting it needs a token with the "
                        f"'{Scope.ADMIN}' scope (a '{Scope.PUSH}' token may delete only "
                        "pending drafts)")


def check_expected_files(what: str, files: Iterable[ModelFile | AdapterFile | DatasetFile],
                         expected: Mapping[str, str] | None) -> None:
    """Refuse to finalize a draft whose files are not exactly those the client sent.

    `expected` maps file names to sha256 (None: no check). It catches a concurrent push
    by the same token that replaced a file, and files left from an earlier attempt.
    """
    if expected is None:
        return
    for name in expected:
        check_filename(name)
    held = {f.filename: f.sha256 for f in files}
    wanted = {name: sha256.lower() for name, sha256 in expected.items()}
    problems = [f"{name}: not uploaded" for name in sorted(wanted.keys() - held.keys())]
    problems += [f"{name}: uploaded but not expected" for name in sorted(held.keys()
                                                                         - wanted.keys())]
    problems += [f"{name}: holds {held[name]}, expected {wanted[name]}"
                 for name in sorted(held.keys() & wanted.keys()) if held[name] != wanted[name]]
    if problems:
        raise DraftChanged(
            f"{what} does not hold the files this push expects ({'; '.join(problems[:10])}); "
            "upload the missing or changed files, or delete the draft and push again",
            mismatches=problems)
