"""Rules for adapters: drafts, uploads, finalize (dedupe + versioning), aliases, deletion."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from sqlalchemy import ScalarSelect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from compress.tensorio import Manifest
from registry.adapters.contents import content_digest, inspect_adapter
from registry.adapters.repository import AdapterRepository
from registry.adapters.rows import AdapterRow
from registry.errors import (
    AdapterNotFound,
    AliasNotFound,
    Conflict,
    InvalidSource,
    NotPending,
    NotReady,
)
from registry.events.outbox import record_event
from registry.events.payloads import adapter_data, alias_data
from registry.events.schemas import EventType
from registry.infra.pagination import Page, page_request
from registry.models import quantized
from registry.models.repository import ModelRepository, id_query
from registry.models.service import model_by_id, model_id, model_names, not_found
from registry.names import check_filename, check_name, close_matches, did_you_mean, is_id, parse_id
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Adapter, AdapterFile, AdapterKind, Model, ModelKind, Status, utcnow
from registry.uploads import drafts
from registry.uploads.flow import UploadTarget
from registry.uploads.rules import adapter_file_rule

LATEST = "latest"
T = TypeVar("T")
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
    found = _resolve(ref, lambda ident: repo.by_id(ident, lock=lock, full=full),
                     repo.by_version, repo.by_alias, repo.latest)
    if found is None:
        raise _not_found(session, ref)
    return found


def get_adapter_row(session: Session, ref: str) -> AdapterRow:
    """`get_adapter` as a plain row (registry/adapters/rows.py), for answers that show it:
    the same references, and the same 404."""
    repo = AdapterRepository(session)
    found = _resolve(ref, repo.row_by_id, repo.row_by_version, repo.row_by_alias,
                     repo.row_latest)
    if found is None:
        raise _not_found(session, ref)
    return found


def _resolve(ref: str, by_id: Callable[[int], T | None], by_version: Callable[[str, int], T | None],
             by_alias: Callable[[str, str], T | None], latest: Callable[[str], T | None]
             ) -> T | None:
    """What `ref` names, found with the lookups given (objects or rows)."""
    if is_id(ref):
        ident = parse_id(ref)
        return None if ident is None else by_id(ident)
    if match := _VERSION_REF.fullmatch(ref):
        name = check_name(match["name"], "adapter name")
        version = parse_id(match["version"])
        return None if version is None else by_version(name, version)
    if match := _ALIAS_REF.fullmatch(ref):
        return by_alias(check_name(match["name"], "adapter name"),
                        check_name(match["alias"], "alias"))
    # A bare name means <name>:latest, so the two never differ. `latest` moves to each new
    # version by itself, and only a deliberate PUT of the alias pins it elsewhere.
    name = check_name(ref, "adapter name")
    return by_alias(name, LATEST) or latest(name)


def adapter_by_id(session: Session, ident: int, lock: bool = False,
                  full: bool = False) -> Adapter:
    """An adapter by its id (a reference already resolved, or a row's foreign key)."""
    adapter = AdapterRepository(session).by_id(ident, lock=lock, full=full)
    if adapter is None:
        raise _not_found(session, f"{ident}")
    return adapter


def _not_found(session: Session, ref: str) -> AdapterNotFound:
    """The 404 for `ref`, suggesting adapter names when its name is unknown."""
    name = None if is_id(ref) else re.split("[@:]", ref, maxsplit=1)[0]
    repo = AdapterRepository(session)
    matches = ([] if name is None or repo.latest(name) is not None
               else close_matches(name, repo.candidate_names(name)))
    return AdapterNotFound(
        f"no adapter {ref!r}{did_you_mean(matches)}; refer to one as <id>, <name>, "
        "<name>@<version> or <name>:<alias>, or list them with GET /adapters",
        did_you_mean=matches)


def create_adapter(session: Session, name: str, base_id: int, kind: AdapterKind,
                   source_model_id: int | None, token_id: int | None = None) -> Adapter:
    """A new draft (compression jobs make theirs here, with their fine-tune as source)."""
    check_name(name, "adapter name")
    base = _ready(model_by_id(session, base_id), "base")
    source_id = (_checked_source(session, model_by_id(session, source_model_id), base)
                 if source_model_id is not None else None)
    return AdapterRepository(session).add(Adapter(
        name=name, kind=kind, base_id=base.id, source_model_id=source_id,
        status=Status.PENDING, params={}, created_by_token_id=token_id))


def start_push(session: Session, settings: Settings, name: str, base_ref: str,
               kind: AdapterKind, source_ref: str | None, token_id: int | None,
               declared: Mapping[str, str] | None = None) -> tuple[Adapter, bool]:
    """The draft a push of `name` uploads to, and whether it is new.

    A push that declares its files (name -> sha256) resumes the token's own newest
    pending draft started for the same files, when it has the same kind, base and source,
    and replaces it otherwise. Without a declaration every push gets a new draft: adapter
    drafts do not hold the name, and two pushes of one name at once (a CI matrix with one
    token) must not write into one draft. Declared names are checked against the file
    rules first, so a push that would be refused stores nothing.
    """
    check_name(name, "adapter name")
    base = _ready_model(session, base_ref, "base", "UnknownBase")
    source_id = _source_id(session, source_ref, base) if source_ref is not None else None
    digest = drafts.check_declared(declared, lambda f: adapter_file_rule(kind, f, settings))
    repo = AdapterRepository(session)
    if digest is not None:
        repo.lock_name(name)  # two re-runs at once must not both start a draft
        draft = repo.own_draft(name, token_id, digest)
        if draft is not None:
            if (draft.kind, draft.base_id, draft.source_model_id) == (kind, base.id, source_id):
                drafts.touch(draft)
                session.flush()
                return draft, False
            repo.delete(draft)  # the same files under another kind, base or source
    return repo.add(Adapter(
        name=name, kind=kind, base_id=base.id, source_model_id=source_id,
        status=Status.PENDING, params={}, created_by_token_id=token_id,
        declared_digest=digest)), True


def _ready_model(session: Session, ref: str, role: str, unknown: str) -> Model:
    if not is_id(ref):
        check_name(ref, f"{role} name")
    model = ModelRepository(session).by_ref(ref)
    if model is None:
        raise not_found(session, ref, f"{role} model", name=unknown)
    return _ready(model, role, ref)


def _ready(model: Model, role: str, ref: str | None = None) -> Model:
    if model.status is not Status.READY:
        ref = model.name if ref is None else ref
        raise NotReady(f"{role} {ref!r} is not finalized yet; POST /models/{ref}/finalize first")
    return model


def _source_id(session: Session, ref: str, base: Model) -> int:
    return _checked_source(session, _ready_model(session, ref, "source", "UnknownSource"), base)


def _checked_source(session: Session, source: Model, base: Model) -> int:
    """The fine-tune an adapter was made from: finalized, and tuned from its base (or
    from the base a 4-bit base was quantized from, or a 4-bit variant of it)."""
    _ready(source, "source")
    if source.kind is not ModelKind.FINETUNE:
        raise InvalidSource(f"source {source.name!r} is a base model; the source is the "
                            "full fine-tune the adapter was made from")
    if source.base_id is None or source.base_id not in quantized.family(session, base.id):
        tuned_from = model_names(session, [source.base_id]).get(source.base_id or 0)
        raise InvalidSource(f"source {source.name!r} is a fine-tune of {tuned_from!r}, not of "
                            f"{base.name!r}; push the adapter against {tuned_from!r}, or name "
                            f"a fine-tune of {base.name!r}")
    return source.id


def pending_adapter(session: Session, ident: int) -> Adapter:
    return _pending(adapter_by_id(session, ident, lock=True))


def _pending(adapter: Adapter) -> Adapter:
    if adapter.status is not Status.PENDING:
        raise NotPending(f"adapter {adapter.name}@{adapter.version} is finalized and immutable; "
                         "push again (POST /adapters) to make a new version")
    drafts.touch(adapter)  # an upload starting or ending: the draft is in use
    return adapter


def upload_target(session: Session, ref: str, filename: str, settings: Settings) -> UploadTarget:
    """Where `PUT /adapters/{ref}/files/{filename}` goes, if the draft still takes files.

    Run in a write transaction: it touches the draft (see pending_adapter).
    """
    check_filename(filename)
    adapter = _pending(get_adapter(session, ref, lock=True))
    adapter_id = adapter.id
    return UploadTarget(filename, AdapterFile, "adapter_id", adapter_id,
                        adapter_file_rule(adapter.kind, filename, settings),
                        recheck=lambda s: pending_adapter(s, adapter_id))


def finalize_adapter(session: Session, store: BlobStore, settings: Settings, ident: int,
                     expected_files: Mapping[str, str] | None = None) -> tuple[Adapter, bool]:
    """Validate a pushed adapter and give it a version; (adapter, whether it is new).

    Identical content under the same name returns the existing version and drops the
    draft. Finalizes of one name are serialised by a lock on the name; the unique
    constraints on (name, version) and (name, content_digest) are the backstop: a
    loser of a race retries and finds the winner's row. `expected_files` (name -> sha256)
    must be exactly the draft's files, when given.
    """
    draft = adapter_by_id(session, ident, lock=True, full=True)
    # Also for a version already made: a concurrent push of the same files may have
    # finalized the draft this push resumed.
    drafts.check_expected_files(f"adapter {draft.id}", draft.files, expected_files)
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
        latest_before = repo.by_alias(draft.name, LATEST)
        previous = latest_before.version if latest_before is not None else None
        try:
            with session.begin_nested():
                draft.version = repo.max_version(draft.name) + 1
                draft.content_digest = digest
                draft.params = contents.params
                draft.peft_type = contents.peft_type
                draft.set_quality(contents.quality)
                draft.size_bytes = size
                draft.compression_ratio = ratio
                draft.status = Status.READY
                draft.finalized_at = utcnow()
                session.flush()
                repo.set_alias(draft.name, LATEST, draft.id)
        except IntegrityError:
            continue
        adapter = adapter_by_id(session, draft.id)
        record_event(session, EventType.ADAPTER_REGISTERED, adapter_data(session, adapter))
        _alias_event(session, adapter.name, LATEST, adapter.base_id, adapter, previous)
        return adapter, True
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


def set_alias(session: Session, adapter: Adapter, alias: str) -> Adapter:
    """Point `alias` at `adapter`; the adapter as read again after the move."""
    check_name(alias, "alias")
    if adapter.status is not Status.READY:
        raise NotReady("only a finalized adapter version can carry an alias")
    repo = AdapterRepository(session)
    before = repo.by_alias(adapter.name, alias)
    ident = adapter.id
    repo.set_alias(adapter.name, alias, ident)
    adapter = adapter_by_id(session, ident)
    if before is None or before.id != adapter.id:  # pointing it where it points is no change
        _alias_event(session, adapter.name, alias, adapter.base_id, adapter,
                     before.version if before is not None else None)
    return adapter


def _alias_event(session: Session, name: str, alias: str, base_id: int, now: Adapter | None,
                 previous_version: int | None) -> None:
    """`alias.set` when it points at `now`, `alias.removed` when it is gone."""
    record_event(session, EventType.ALIAS_SET if now is not None else EventType.ALIAS_REMOVED,
                 alias_data(session, name, alias, base_id, now, previous_version))


def remove_alias(session: Session, ref: str, alias: str) -> None:
    """Remove `alias` from the adapter name `ref` names. `latest` stays: it is what the
    bare name means."""
    check_name(alias, "alias")
    name = get_adapter(session, ref).name
    if alias == LATEST:
        raise Conflict(f"'{LATEST}' is what {name!r} alone refers to, so it cannot be removed; "
                       f"move it with PUT /adapters/{name}@<version>/aliases/{LATEST}",
                       name="AliasReserved")
    repo = AdapterRepository(session)
    before = repo.by_alias(name, alias)
    if before is not None and repo.delete_alias(name, alias):
        _alias_event(session, name, alias, before.base_id, None, before.version)
    else:
        aliases = repo.aliases_of(name)
        matches = close_matches(alias, aliases)
        raise AliasNotFound(f"adapter {name!r} has no alias {alias!r}{did_you_mean(matches)}; "
                            f"its aliases: {', '.join(aliases)}", did_you_mean=matches)


def delete_adapter(session: Session, ident: int, scopes: Iterable[str]) -> None:
    """Delete a version (`admin`) or a pending draft, by its id (`push`)."""
    repo = AdapterRepository(session)
    adapter = adapter_by_id(session, ident, lock=True)
    drafts.check_may_delete(adapter.status, scopes,
                            f"adapter {adapter.name}@{adapter.version}")
    name, aliases = adapter.name, [a.alias for a in adapter.aliases]
    base_id, version = adapter.base_id, adapter.version
    if adapter.status is Status.READY:  # a draft was never announced
        record_event(session, EventType.ADAPTER_DELETED, adapter_data(session, adapter))
    repo.delete(adapter)
    for alias in aliases:  # they went with the version, but `latest` moves back
        newest = repo.latest(name) if alias == LATEST else None
        if newest is not None:
            repo.set_alias(name, LATEST, newest.id)
        _alias_event(session, name, alias, base_id, newest, version)


def _base_filter(base: str) -> int | ScalarSelect[int]:
    """The base filter as a subquery, so a listing spends no statement on it; a name is
    checked first, as `model_id` would."""
    if not is_id(base):
        check_name(base, "model name")
    query = id_query(base)
    return 0 if query is None else query.scalar_subquery()  # 0: no model has it


def list_adapters(session: Session, settings: Settings, *, base: str | None,
                  kind: AdapterKind | None, name: str | None, alias: str | None,
                  limit: int | None, page_token: str | None,
                  sort: str = "newest", compatible: bool = False,
                  peft_type: str | None = None) -> Page[AdapterRow]:
    """Ready versions newest first, or with `sort="gain_kept"` by measured gain kept.

    `compatible`: on `base` or any base of its 4-bit family (`quantized.family`)."""
    for value, what in ((name, "adapter name"), (alias, "alias")):
        if value is not None:
            check_name(value, what)
    by_gain = sort == "gain_kept"
    # The sort joins the filters only when it is not the default, so that cursors issued
    # before sorting existed stay valid.
    request = page_request(settings, limit, page_token,
                           {"base": base, "kind": kind, "name": name, "alias": alias,
                            "sort": sort if by_gain else None,
                            "compatible": True if compatible else None,
                            # only when given: cursors issued before the filter stay valid
                            **({"peft_type": peft_type} if peft_type is not None else {})})
    base_id: int | ScalarSelect[int] | None = None
    base_ids = None
    if compatible and base is not None:
        base_ids = set(quantized.family(session, model_id(session, base)))
    elif base is not None:
        base_id = _base_filter(base)
    rows = AdapterRepository(session).page(base_id=base_id, kind=kind, name=name, alias=alias,
                                           peft_type=peft_type,
                                           after_id=request.after_id, limit=request.fetch,
                                           by_gain=by_gain, after_gain=request.after_rank,
                                           base_ids=base_ids)
    if not rows and base is not None:
        model_id(session, base)  # an empty page, or an unknown base: 404
    return request.page(rows, key=lambda a: a.id,
                        rank=(lambda a: a.gain_kept) if by_gain else None)
