"""Rules for adapters: drafts, uploads, finalize (dedupe + versioning), aliases, deletion."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from compress.tensorio import Manifest
from registry.adapters.contents import content_digest, inspect_adapter
from registry.adapters.repository import AdapterRepository
from registry.errors import (
    AdapterNotFound,
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NotPending,
    NotReady,
)
from registry.models.repository import ModelRepository
from registry.models.service import model_id
from registry.names import check_filename, check_name, is_id, parse_id
from registry.pagination import Page, page_request
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Adapter, AdapterFile, AdapterKind, Model, Status, utcnow
from registry.uploads.flow import UploadTarget
from registry.uploads.rules import adapter_file_rule

LATEST = "latest"
# fullmatch; ASCII digits only (see registry/names.py)
_VERSION_REF = re.compile(r"(?P<name>[^@:]+)@(?P<version>[0-9]+)")
_ALIAS_REF = re.compile(r"(?P<name>[^@:]+):(?P<alias>[^@:]+)")
# Finalize retries when a concurrent push of the same name took the version first.
_FINALIZE_ATTEMPTS = 5


def get_adapter(session: Session, ref: str, lock: bool = False, full: bool = False) -> Adapter:
    """Resolve `<id>`, `<name>@<version>`, `<name>:<alias>` or `<name>` (newest version).

    `full` loads the files' safetensors headers too (for finalize).
    """
    repo = AdapterRepository(session)
    adapter: Adapter | None = None
    if is_id(ref):
        if (adapter_id := parse_id(ref)) is not None:
            adapter = repo.by_id(adapter_id, lock=lock, full=full)
    elif match := _VERSION_REF.fullmatch(ref):
        name = check_name(match["name"], "adapter name")
        if (version := parse_id(match["version"])) is not None:
            adapter = repo.by_version(name, version)
    elif match := _ALIAS_REF.fullmatch(ref):
        adapter = repo.by_alias(check_name(match["name"], "adapter name"),
                                check_name(match["alias"], "alias"))
    else:
        adapter = repo.latest(check_name(ref, "adapter name"))
    if adapter is None:
        raise AdapterNotFound(
            f"no adapter {ref!r}; refer to one as <id>, <name>, <name>@<version> or "
            "<name>:<alias>, or list them with GET /adapters"
        )
    return adapter


def create_adapter(session: Session, name: str, base_ref: str, kind: AdapterKind,
                   source_ref: str | None) -> Adapter:
    check_name(name, "adapter name")
    base = _ready_model(session, base_ref, "base")
    source_id = _ready_model(session, source_ref, "source model").id if source_ref else None
    return AdapterRepository(session).add(Adapter(
        name=name, kind=kind, base_id=base.id, source_model_id=source_id,
        status=Status.PENDING, params={}))


def _ready_model(session: Session, ref: str, role: str) -> Model:
    if not is_id(ref):
        check_name(ref, f"{role} name")
    model = ModelRepository(session).by_ref(ref)
    if model is None:
        raise InvalidRequest(f"unknown {role} {ref!r}; register and finalize it first",
                             name="UnknownBase")
    if model.status is not Status.READY:
        raise NotReady(f"{role} {ref!r} is not finalized yet; POST /models/{ref}/finalize first")
    return model


def pending_adapter(session: Session, ref: str) -> Adapter:
    adapter = get_adapter(session, ref, lock=True)
    if adapter.status is not Status.PENDING:
        raise NotPending(f"adapter {adapter.name}@{adapter.version} is finalized and immutable; "
                         "push again (POST /adapters) to make a new version")
    return adapter


def upload_target(session: Session, ref: str, filename: str, settings: Settings) -> UploadTarget:
    """Where `PUT /adapters/{ref}/files/{filename}` goes, if the draft still takes files."""
    check_filename(filename)
    adapter = pending_adapter(session, ref)
    adapter_id = adapter.id
    return UploadTarget(filename, AdapterFile, "adapter_id", adapter_id,
                        adapter_file_rule(adapter.kind, filename, settings),
                        recheck=lambda s: pending_adapter(s, str(adapter_id)))


def finalize_adapter(session: Session, store: BlobStore, settings: Settings,
                     ref: str) -> tuple[Adapter, bool]:
    """Validate a pushed adapter and give it a version; (adapter, whether it is new).

    Identical content under the same name returns the existing version and drops the
    draft. Finalizes of one name are serialised by a lock on the name; the unique
    constraints on (name, version) and (name, content_digest) are the backstop: a
    loser of a race retries and finds the winner's row.
    """
    draft = get_adapter(session, ref, lock=True, full=True)
    if draft.status is Status.READY:
        return draft, False
    base = ModelRepository(session).by_id(draft.base_id, full=True)
    assert base is not None  # a draft's base was ready when it was created
    assert base.manifest is not None
    files = {f.filename: f for f in draft.files}
    contents = inspect_adapter(draft.kind, files, Manifest.from_dict(base.manifest), store,
                               settings)
    digest = content_digest(files)
    size = sum(f.size for f in files.values())
    ratio = _compression_ratio(session, draft, base, size)
    repo = AdapterRepository(session)
    repo.lock_name(draft.name)
    for _ in range(_FINALIZE_ATTEMPTS):
        existing = repo.by_digest(draft.name, digest)
        if existing is not None:
            repo.delete(draft)
            return existing, False
        try:
            with session.begin_nested():
                draft.version = repo.max_version(draft.name) + 1
                draft.content_digest = digest
                draft.params = contents.params
                draft.quality = contents.quality
                draft.size_bytes = size
                draft.compression_ratio = ratio
                draft.status = Status.READY
                draft.finalized_at = utcnow()
                session.flush()
                repo.set_alias(draft.name, LATEST, draft.id)
        except IntegrityError:
            continue
        return get_adapter(session, str(draft.id)), True
    raise Conflict(f"too many concurrent pushes of {draft.name!r}; retry the finalize")


def _compression_ratio(session: Session, draft: Adapter, base: Model, size: int) -> float | None:
    """Bytes of the full weights this adapter stands in for, over its own bytes.

    The source fine-tune when known, else the base (a fine-tune has the base's tensors).
    """
    model = base
    if draft.source_model_id is not None:
        model = ModelRepository(session).by_id(draft.source_model_id) or base
    weights = sum(f.size for f in model.files if f.filename.endswith(".safetensors"))
    return weights / size if size else None


def set_alias(session: Session, ref: str, alias: str) -> Adapter:
    check_name(alias, "alias")
    adapter = get_adapter(session, ref)
    if adapter.status is not Status.READY:
        raise NotReady("only a finalized adapter version can carry an alias")
    AdapterRepository(session).set_alias(adapter.name, alias, adapter.id)
    return get_adapter(session, str(adapter.id))


def delete_adapter(session: Session, ref: str) -> None:
    repo = AdapterRepository(session)
    adapter = get_adapter(session, ref, lock=True)
    name, had_latest = adapter.name, any(a.alias == LATEST for a in adapter.aliases)
    repo.delete(adapter)
    if had_latest and (newest := repo.latest(name)) is not None:
        repo.set_alias(name, LATEST, newest.id)


def list_adapters(session: Session, settings: Settings, *, base: str | None,
                  kind: AdapterKind | None, name: str | None, alias: str | None,
                  limit: int | None, page_token: str | None) -> Page[Adapter]:
    for value, what in ((name, "adapter name"), (alias, "alias")):
        if value is not None:
            check_name(value, what)
    request = page_request(settings, limit, page_token,
                           {"base": base, "kind": kind, "name": name, "alias": alias})
    base_id: int | None = None
    if base is not None:
        try:
            base_id = model_id(session, base)
        except ModelNotFound:
            return Page([], None)
    rows = AdapterRepository(session).page(base_id=base_id, kind=kind, name=name, alias=alias,
                                           after_id=request.after_id, limit=request.fetch)
    return request.page(rows, key=lambda a: a.id)
