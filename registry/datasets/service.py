"""Rules for data sets: drafts taking files, finalize (content digest), reads, deletion.

A data set follows the models' draft rules (registry/uploads/drafts.py) and, once
finalized, the adapters' identity rule: its content digest (file names and sha256) is
what it is. Pushing the same files under its name again finds it; any other change is
refused, because jobs and reports name a data set and must always mean the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy.orm import Session

from compress.modeling.data import DataKind, data_kind
from registry.datasets.repository import DatasetRepository
from registry.errors import DatasetNotFound, DraftInProgress, MissingFiles, NameTaken, NotPending
from registry.events.outbox import record_event
from registry.events.payloads import dataset_data
from registry.events.schemas import EventType
from registry.infra.pagination import Page, page_request
from registry.names import check_name, close_matches, did_you_mean
from registry.settings import Settings
from registry.tables import Dataset, DatasetFile, Status, utcnow
from registry.uploads import drafts
from registry.uploads.flow import UploadTarget
from registry.uploads.rules import dataset_file_rule


def get_dataset(session: Session, name: str, lock: bool = False) -> Dataset:
    """A data set, draft or final, by name, with its files."""
    check_name(name, "data set name")  # before it reaches SQL (PostgreSQL refuses NUL)
    dataset = DatasetRepository(session).by_name(name, lock=lock)
    if dataset is None:
        raise not_found(session, name)
    return dataset


def not_found(session: Session, name: str) -> DatasetNotFound:
    """The 404 for an unknown data set, with up to three names it may misspell."""
    matches = close_matches(name, DatasetRepository(session).candidate_names(name))
    return DatasetNotFound(f"no data set {name!r}{did_you_mean(matches)}; list data sets "
                           "with GET /datasets", did_you_mean=matches)


def get_final_dataset(session: Session, name: str) -> Dataset:
    """A finalized data set: what a job may read. A draft is refused as unknown, since
    its files may still change under the job."""
    dataset = get_dataset(session, name)
    if dataset.status is not Status.READY:
        raise DatasetNotFound(f"data set {name!r} is a pending draft, not a finalized data "
                              f"set; finish its push (POST /datasets/{name}/finalize) first")
    return dataset


def needs_tokenizer(dataset: Dataset) -> bool:
    """Whether some file is text (.txt, .jsonl), which only a model's tokenizer turns
    into token ids; pre-tokenized .safetensors files need none."""
    return any(data_kind(f.filename) is not DataKind.TOKENS for f in dataset.files)


def start_push(session: Session, settings: Settings, name: str, description: str | None,
               token_id: int | None, declared: Mapping[str, str] | None = None
               ) -> tuple[Dataset, bool]:
    """The data set a push of `name` uploads to, and whether it is a new draft.

    As for models, the token's own pending draft of the name is resumed when both pushes
    declared the same files (or either declared none), and replaced otherwise. A finalized
    data set is returned when the push declares exactly its files (a re-push of the
    same content); any other push of its name is refused.
    """
    check_name(name, "data set name")
    digest = drafts.check_declared(declared, lambda f: dataset_file_rule(f, settings))
    # Two first pushes of a new name would both find nothing to lock and both insert; the
    # name's lock makes each see what the one before it committed (any number of them).
    DatasetRepository(session).lock_name(name)
    return _start_draft(session, name, description, token_id, declared, digest)


def _start_draft(session: Session, name: str, description: str | None,
                 token_id: int | None, declared: Mapping[str, str] | None,
                 digest: str | None) -> tuple[Dataset, bool]:
    repo = DatasetRepository(session)
    existing = repo.by_name(name, lock=True)
    if existing is not None:
        if existing.status is Status.READY:
            if drafts.repushed(existing.files, declared):
                return existing, False
            raise NameTaken(f"data set {name!r} is finalized with other files, and a data "
                            "set never changes (jobs and reports name it); push the new "
                            "content under another name")
        if not drafts.owns(existing, token_id):
            raise DraftInProgress(
                f"another token's push of {name!r} is pending; delete that draft "
                f"(DELETE /datasets/{name}, any token with push) or wait for it to expire, "
                "or pick another name")
        if drafts.same_files(existing, digest):
            existing.declared_digest = digest or existing.declared_digest
            if description is not None:
                existing.description = description
            drafts.touch(existing)
            session.flush()
            return existing, False
        repo.delete(existing)  # started for other files: start over
    return repo.add(Dataset(name=name, description=description, status=Status.PENDING,
                            created_by_token_id=token_id, declared_digest=digest)), True


def pending_dataset(session: Session, name: str, dataset_id: int | None = None) -> Dataset:
    """The data set a file is being uploaded to: still a draft (and, with `dataset_id`,
    still the same draft, not one a new push started under the name meanwhile)."""
    dataset = get_dataset(session, name, lock=True)
    if dataset_id is not None and dataset.id != dataset_id:
        raise DatasetNotFound(f"the draft of data set {name!r} this upload went to was "
                              "deleted meanwhile; push again")
    return _taking_files(dataset)


def _taking_files(dataset: Dataset) -> Dataset:
    if dataset.status is not Status.PENDING:
        raise NotPending(f"data set {dataset.name!r} is finalized and its files are "
                         "immutable; push changed data under another name")
    drafts.touch(dataset)  # an upload starting or ending: the draft is in use
    return dataset


def upload_target(session: Session, name: str, filename: str, settings: Settings,
                  sha256: str | None = None) -> UploadTarget:
    """Where `PUT /datasets/{name}/files/{filename}` goes, if the draft still takes files
    (or the data set holds the file with the `sha256` the client declares already).

    Run in a write transaction: it touches the draft (see pending_dataset).
    """
    rule = dataset_file_rule(filename, settings)
    dataset = get_dataset(session, name, lock=True)
    held = drafts.held_upload(dataset, filename, sha256)
    if held is None:
        _taking_files(dataset)
    dataset_id = dataset.id
    return UploadTarget(filename, DatasetFile, "dataset_id", dataset_id, rule,
                        recheck=lambda s: pending_dataset(s, name, dataset_id), held=held)


def finalize_dataset(session: Session, name: str,
                     expected_files: Mapping[str, str] | None = None) -> Dataset:
    """Make a draft immutable under its content digest; a finalized one is returned as
    it is. `expected_files` (name -> sha256) must then be exactly its files."""
    dataset = get_dataset(session, name, lock=True)
    drafts.check_expected_files(f"data set {name!r}", dataset.files, expected_files)
    if dataset.status is Status.READY:
        return dataset  # finalize is idempotent
    if not dataset.files:
        raise MissingFiles(f"data set {name!r} has no files; upload at least one with "
                           f"PUT /datasets/{name}/files/<filename>")
    dataset.content_digest = drafts.files_digest({f.filename: f.sha256
                                                  for f in dataset.files})
    dataset.total_bytes = sum(f.size for f in dataset.files)
    dataset.status = Status.READY
    dataset.finalized_at = utcnow()
    session.flush()
    record_event(session, EventType.DATASET_REGISTERED, dataset_data(dataset))
    return dataset


def list_datasets(session: Session, settings: Settings, status: Status | None,
                  limit: int | None, page_token: str | None) -> Page[Dataset]:
    request = page_request(settings, limit, page_token, {"status": status})
    rows = DatasetRepository(session).page(status, request.after_id, request.fetch)
    return request.page(rows, key=lambda d: d.id)


def delete_dataset(session: Session, name: str, scopes: Iterable[str]) -> None:
    """Delete a data set: a pending draft with `push`, a finalized one with `admin`."""
    dataset = get_dataset(session, name, lock=True)
    drafts.check_may_delete(dataset.status, scopes, f"data set {name!r}")
    if dataset.status is Status.READY:  # a draft was never announced
        record_event(session, EventType.DATASET_DELETED, dataset_data(dataset))
    DatasetRepository(session).delete(dataset)
