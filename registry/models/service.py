"""Rules for models: creation, file uploads while pending, finalize (manifest), deletion."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from compress.errors import CodecError
from compress.filenames import TOKENIZER_FILES, is_tokenizer_file
from compress.tensorio import (
    Manifest,
    header_from_dict,
    manifest_from_headers,
    parse_weight_map,
    shape_mismatches,
    strictjson,
)
from registry.errors import (
    DraftInProgress,
    HasDependents,
    IncompatibleBase,
    InvalidRequest,
    MissingFiles,
    ModelNotFound,
    NameTaken,
    NotPending,
    NotReady,
    from_codec_error,
)
from registry.events.outbox import record_event
from registry.events.payloads import model_data
from registry.events.schemas import EventType
from registry.infra.pagination import Page, page_request
from registry.models.repository import ModelRepository
from registry.names import check_name, close_matches, did_you_mean, is_id
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Model, ModelFile, ModelKind, Status, utcnow
from registry.uploads import drafts
from registry.uploads.flow import UploadTarget
from registry.uploads.rules import model_file_rule

CONFIG_FILE = "config.json"
_TOKENIZERS = ", ".join(sorted(TOKENIZER_FILES))
INDEX_SUFFIX = ".safetensors.index.json"


def get_model(session: Session, ref: str, lock: bool = False, full: bool = False) -> Model:
    """A model by id or name (`full`: with its manifest and safetensors headers)."""
    if not is_id(ref):
        check_name(ref, "model name")  # before it reaches SQL (PostgreSQL refuses NUL)
    model = ModelRepository(session).by_ref(ref, lock=lock, full=full)
    if model is None:
        raise not_found(session, ref)
    return model


def model_id(session: Session, ref: str) -> int:
    """The id of a model by id or name, loading nothing else (for listing filters)."""
    if not is_id(ref):
        check_name(ref, "model name")
    found = ModelRepository(session).id_of(ref)
    if found is None:
        raise not_found(session, ref)
    return found


def not_found(session: Session, ref: str, role: str = "model", *,
              kind: ModelKind | None = None, name: str | None = None) -> ModelNotFound:
    """The 404 for an unknown model `ref`, with up to three names it may misspell.

    `role` says what the caller was looking for ("base model"); `name` overrides the
    error's name (`UnknownBase` for a request body's reference).
    """
    matches = [] if is_id(ref) else close_matches(
        ref, ModelRepository(session).candidate_names(ref, kind))
    return ModelNotFound(f"no {role} {ref!r}{did_you_mean(matches)}; list models with "
                         "GET /models", name=name, did_you_mean=matches)


def model_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """Names of the models with these ids (for showing bases and sources by name)."""
    return ModelRepository(session).names_of({i for i in ids if i is not None})


def start_push(session: Session, settings: Settings, name: str, kind: ModelKind,
               base_ref: str | None, token_id: int | None,
               declared: Mapping[str, str] | None = None) -> tuple[Model, bool]:
    """The draft a push of `name` uploads to, and whether it is new.

    The token's own pending draft of the name is resumed, its files kept, when it was
    started for the same kind and base and, if both pushes declared their files, for the
    same files. Otherwise it is replaced by a new draft. `declared` (name -> sha256) is
    checked against the file rules first, so a push that would be refused stores nothing.
    """
    check_name(name, "model name")
    base_id = _base_id(session, kind, base_ref)
    digest = drafts.check_declared(declared, lambda f: model_file_rule(f, settings))
    # As for data sets: without the name's lock, racing first pushes both insert.
    ModelRepository(session).lock_name(name)
    return _start_draft(session, name, kind, base_id, token_id, declared, digest)


def _start_draft(session: Session, name: str, kind: ModelKind, base_id: int | None,
                 token_id: int | None, declared: Mapping[str, str] | None,
                 digest: str | None) -> tuple[Model, bool]:
    repo = ModelRepository(session)
    existing = repo.by_ref(name, lock=True)
    if existing is not None:
        if existing.status is Status.READY:
            return _repushed(existing, kind, base_id, declared), False
        if not drafts.owns(existing, token_id):
            raise DraftInProgress(
                f"another token's push of {name!r} is pending; delete that draft "
                f"(DELETE /models/{name}, any token with push) or wait for it to expire, "
                "or pick another name")
        same_target = existing.kind is kind and existing.base_id == base_id
        if same_target and drafts.same_files(existing, digest):
            existing.declared_digest = digest or existing.declared_digest
            drafts.touch(existing)
            session.flush()
            return existing, False
        if same_target:  # other files: start over in place, so drafts built on it stay
            return _restart_draft(session, existing, digest), True
        _delete(session, existing)  # started for another kind or base: start over
    return repo.add(Model(name=name, kind=kind, base_id=base_id, status=Status.PENDING,
                          created_by_token_id=token_id, declared_digest=digest)), True


def _repushed(model: Model, kind: ModelKind, base_id: int | None,
              declared: Mapping[str, str] | None) -> Model:
    """The finalized `model`, for a push of its very files (a CI retry), or of them plus
    tokenizer files it lacks (which that push then attaches); any other push of its name
    is refused, as a model's weights never change."""
    if model.kind is not kind or model.base_id != base_id:
        raise NameTaken(f"a model named {model.name!r} is registered already, with "
                        "another kind or base; pick another name")
    if drafts.repushed(model.files, declared, is_tokenizer_file):
        return model
    raise NameTaken(f"a model named {model.name!r} is finalized with other files; its "
                    "weights never change: pick another name for new weights. Tokenizer "
                    f"files ({_TOKENIZERS}) it lacks can be added: "
                    f"deltahub attach-tokenizer {model.name} DIR")


def _restart_draft(session: Session, draft: Model, digest: str | None) -> Model:
    """`draft` emptied of its files, for a push that declares other files. A fine-tune
    draft pushed on it meanwhile (a base pushed without its config.json, then its
    fine-tune) keeps pointing at it, where deleting it would be refused."""
    session.execute(delete(ModelFile).where(ModelFile.model_id == draft.id))
    draft.declared_digest = digest
    drafts.touch(draft)
    session.flush()
    session.expire(draft, ["files"])
    return draft


def _base_id(session: Session, kind: ModelKind, base_ref: str | None) -> int | None:
    if kind is ModelKind.BASE:
        if base_ref is not None:
            raise InvalidRequest("a base model has no base; omit 'base' or use kind 'finetune'")
        return None
    if base_ref is None:
        raise InvalidRequest("a finetune needs 'base': the name of the model it was tuned from")
    base = ModelRepository(session).by_ref(check_name(base_ref, "base model name"))
    if base is None:
        raise not_found(session, base_ref, "base model", kind=ModelKind.BASE,
                        name="UnknownBase")
    if base.kind is not ModelKind.BASE:
        raise InvalidRequest(f"{base_ref!r} is a finetune; a finetune's base must be a "
                             "base model", name="UnknownBase")
    return base.id


def _taking_files(model: Model, filename: str | None = None) -> Model:
    """`model`, if it takes `filename`: a draft takes any file; a finalized model only a
    tokenizer file it does not hold yet (None: any file, so only a draft)."""
    if model.status is not Status.PENDING:
        if filename is not None and is_tokenizer_file(filename) and all(
                f.filename != filename for f in model.files):
            return model
        raise NotPending(f"model {model.name!r} is finalized and its files are immutable; "
                         "register a new model for new weights (a finalized model can "
                         f"gain only the tokenizer files it lacks: {_TOKENIZERS})")
    drafts.touch(model)  # an upload starting or ending: the draft is in use
    return model


def upload_target(session: Session, ref: str, filename: str, settings: Settings,
                  sha256: str | None = None) -> UploadTarget:
    """Where `PUT /models/{ref}/files/{filename}` goes, if the model still takes files
    (or the model holds the file with the `sha256` the client declares already).

    Run in a write transaction: it touches the draft (see _taking_files).
    """
    rule = model_file_rule(filename, settings)
    model = get_model(session, ref, lock=True)
    held = drafts.held_upload(model, filename, sha256)
    if held is None:
        _taking_files(model, filename)
    model_id = model.id
    return UploadTarget(
        filename, ModelFile, "model_id", model_id, rule, held=held,
        recheck=lambda s: _taking_files(get_model(s, str(model_id), lock=True), filename))


def finalize_model(session: Session, store: BlobStore, ref: str,
                   expected_files: Mapping[str, str] | None = None) -> Model:
    """Build and record the manifest; `expected_files` (name -> sha256) must then be
    exactly the draft's files."""
    model = get_model(session, ref, lock=True, full=True)
    drafts.check_expected_files(f"model {model.name!r}", model.files, expected_files)
    if model.status is Status.READY:
        return model  # finalize is idempotent
    manifest = _build_manifest(model, store)
    if model.kind is ModelKind.FINETUNE:
        _check_against_base(session, model, manifest)
    summary = manifest.summary()
    model.manifest = manifest.to_dict()
    model.manifest_digest = manifest.digest()
    model.tensor_count = summary.tensor_count
    model.parameter_count = summary.parameter_count
    model.dtypes = summary.dtypes
    model.status = Status.READY
    model.finalized_at = utcnow()
    session.flush()
    record_event(session, EventType.MODEL_REGISTERED, model_data(session, model))
    return model


def _build_manifest(model: Model, store: BlobStore) -> Manifest:
    files = {f.filename: f for f in model.files}
    headers = {name: header_from_dict(f.header) for name, f in files.items()
               if name.endswith(".safetensors") and f.header is not None}
    missing = [] if headers else ["at least one .safetensors file"]
    if CONFIG_FILE not in files:
        missing.append(CONFIG_FILE)
    if missing:
        raise MissingFiles(f"model {model.name!r} cannot be finalized without "
                           f"{' and '.join(missing)}; upload with PUT /models/{model.name}/files/"
                           "<filename>")
    indexes = [name for name in files if name.endswith(INDEX_SUFFIX)]
    if len(indexes) > 1:
        raise InvalidRequest(f"model {model.name!r} has several shard indexes {indexes}; "
                             "keep one")
    try:
        weight_map = None
        if indexes:
            weight_map = parse_weight_map(_read_json(store, files[indexes[0]].sha256),
                                          indexes[0])
        return manifest_from_headers(headers, weight_map)
    except CodecError as exc:
        raise from_codec_error(exc) from exc


def _check_against_base(session: Session, model: Model, manifest: Manifest) -> None:
    assert model.base_id is not None
    base = ModelRepository(session).by_id(model.base_id, full=True)
    if base is None or base.status is not Status.READY or base.manifest is None:
        raise NotReady(f"the base of {model.name!r} is not finalized yet; finalize it first")
    problems = shape_mismatches(Manifest.from_dict(base.manifest), manifest)
    if problems:
        raise IncompatibleBase(
            f"finetune {model.name!r} does not match its base {base.name!r}: "
            + "; ".join(problems[:20]), mismatches=problems)


def _read_json(store: BlobStore, sha256: str) -> Any:
    # Client JSON, parsed strictly (bounded depth, no NaN). The upload already applied
    # the configured depth; this function has no settings, so the default applies here.
    return strictjson.loads(store.read_bytes(sha256), "the shard index")


def list_models(session: Session, settings: Settings, kind: ModelKind | None,
                base_ref: str | None, limit: int | None, page_token: str | None) -> Page[Model]:
    request = page_request(settings, limit, page_token, {"kind": kind, "base": base_ref})
    base_id = model_id(session, base_ref) if base_ref is not None else None
    rows = ModelRepository(session).page(kind, base_id, request.after_id, request.fetch)
    return request.page(rows, key=lambda m: m.id)


def delete_model(session: Session, ref: str, scopes: Iterable[str]) -> None:
    """Delete a model: a pending draft with `push`, a finalized model with `admin`."""
    model = get_model(session, ref, lock=True)
    drafts.check_may_delete(model.status, scopes, f"model {model.name!r}")
    _delete(session, model)


def _delete(session: Session, model: Model) -> None:
    repo = ModelRepository(session)
    finetunes, adapters = repo.dependents(model.id)
    if finetunes or adapters:
        raise HasDependents(
            f"model {model.name!r} still has {finetunes} finetune(s) and {adapters} adapter(s) "
            "depending on it; delete those first"
        )
    if model.status is Status.READY:  # a draft was never announced
        record_event(session, EventType.MODEL_DELETED, model_data(session, model))
    repo.delete(model)
