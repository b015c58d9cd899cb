"""`deltahub compress` and `deltahub jobs ls|show|cancel`: compression jobs over HTTP."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

import typer

from registry.cli.console import console, print_json, print_table, stdout
from registry.cli.failures import EXIT_FAILED, EXIT_GATE, EXIT_OK, EXIT_USAGE, CommandFailure
from registry.cli.hints import compress_flags
from registry.cli.remote import DEFAULT_URL, Json, Token, Url, connected
from registry.client import ClientError, DeltahubClient

jobs_app = typer.Typer(help="Compression jobs.", no_args_is_help=True)

# Exit statuses of `deltahub compress --wait`: what CI scripts test (registry/cli/failures.py).
EXIT_SUCCEEDED, EXIT_CANCELLED = EXIT_OK, EXIT_GATE
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
_POLL_SECONDS = 1.0


class Method(StrEnum):
    bitdelta = "bitdelta"
    lora = "lora"


class Verify(StrEnum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"
    off = "off"


def compress(
    model: Annotated[str, typer.Argument(help="the fine-tune to compress (name or id)")],
    method: Annotated[Method, typer.Option(help="bitdelta (1 bit) or lora (low rank)")],
    name: Annotated[str | None, typer.Option(help="adapter name [<model>-<method>]")] = None,
    alias: Annotated[str | None, typer.Option(help="point this alias at the result")] = None,
    target: Annotated[list[str] | None, typer.Option(
        help="module to compress (repeat; default: attention and MLP projections)")] = None,
    scale_mode: Annotated[str | None, typer.Option(help="bitdelta: row or tensor")] = None,
    rank: Annotated[int | None, typer.Option(help="lora: one rank for every module")] = None,
    target_error: Annotated[float | None, typer.Option(
        help="lora: per-module relative error to reach")] = None,
    max_rank: Annotated[int | None, typer.Option(help="lora: cap with --target-error")] = None,
    targets_only: Annotated[bool, typer.Option(
        help="lora: adapt the targets only, leaving changed norms, embeddings and lm_head "
             "out")] = False,
    save_modules: Annotated[bool, typer.Option(
        help="lora: no-op (carrying changed non-target modules is the default); kept for "
             "older scripts")] = False,
    verify: Annotated[Verify, typer.Option(help="check the result against the fine-tune")]
    = Verify.auto,
    max_error: Annotated[float | None, typer.Option(
        help="fail when the measured error is higher")] = None,
    distill: Annotated[str | None, typer.Option(
        help="bitdelta: distill the scales on this registered data set (push-dataset)")]
    = None,
    distill_steps: Annotated[int | None, typer.Option(help="distillation steps [200]")] = None,
    distill_lr: Annotated[float | None, typer.Option(help="distillation AdamW lr [1e-4]")]
    = None,
    distill_batch_size: Annotated[int | None, typer.Option(
        help="distillation rows per step [4]")] = None,
    distill_seq_len: Annotated[int | None, typer.Option(
        help="distillation tokens per row [128]")] = None,
    distill_seed: Annotated[int | None, typer.Option(
        help="distillation data order seed [0]")] = None,
    evaluate: Annotated[list[str] | None, typer.Option(
        help="measure gain kept on this registered data set (repeat; the first is the "
             "headline)")] = None,
    evaluate_batch_size: Annotated[int | None, typer.Option(
        help="evaluation rows per batch [4]")] = None,
    evaluate_seq_len: Annotated[int | None, typer.Option(
        help="evaluation tokens per row [128]")] = None,
    evaluate_max_batches: Annotated[int | None, typer.Option(
        help="evaluation batches per data set, at most [all, within the token budget]")
    ] = None,
    evaluate_max_tokens: Annotated[int | None, typer.Option(
        help="evaluation token budget: predicted tokens per data set, at most [262,144]")
    ] = None,
    base: Annotated[str | None, typer.Option(
        help="compress against this 4-bit base of the fine-tune's base (push-model "
             "--quantized-from), and register the adapter on it")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job to its end (exit 0 succeeded, "
                                            "1 failed, 3 cancelled)")] = False,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Compress a registered fine-tune into a BitDelta or LoRA adapter, as a server job.

    LoRA needs its size: --rank N (one rank for every module) or --target-error E (each
    module the smallest rank within E).
    """
    _check_lora_size(method, rank, target_error)
    options: dict[str, Any] = {
        "name": name, "alias": alias, "targets": target or None, "scale_mode": scale_mode,
        "rank": rank, "target_error": target_error, "max_rank": max_rank,
        "targets_only": targets_only or None, "save_modules": save_modules or None,
        "verify": verify.value, "max_error": max_error,
        "distill": _section("distill", {"dataset": distill}, {
            "steps": distill_steps, "lr": distill_lr, "batch_size": distill_batch_size,
            "seq_len": distill_seq_len, "seed": distill_seed}),
        "evaluate": _section("evaluate", {"datasets": evaluate}, {
            "batch_size": evaluate_batch_size, "seq_len": evaluate_seq_len,
            "max_batches": evaluate_max_batches, "max_tokens": evaluate_max_tokens}),
        "base": base}
    with connected(url, token) as client:
        # One key per invocation: if the connection drops after the server queued the
        # job, the retry finds that job instead of queueing a second.
        try:
            job = client.compress(model, method.value, {k: v for k, v in options.items()
                                                        if v is not None},
                                  idempotency_key=f"cli-{uuid.uuid4()}")
        except ClientError as exc:
            raise ClientError(exc.status, exc.error, compress_flags(exc.detail),
                              method=exc.method, url=exc.url,
                              did_you_mean=exc.did_you_mean) from exc
        console.print(f"job {job['id']} queued: {method.value} of {model} -> "
                      f"{job['adapter_name']}")
        if wait:
            job = _follow_until_interrupted(client, job)
    stdout.print(_summary(job))
    raise typer.Exit(_exit_status(job))


def _check_lora_size(method: Method, rank: int | None, target_error: float | None) -> None:
    if method is Method.lora and (rank is None) == (target_error is None):
        given = "not both" if rank is not None else "one of them"
        raise CommandFailure(
            "bad option", f"--method lora takes --rank N (every module gets rank N; e.g. "
            "--rank 16) or --target-error E (each module the smallest rank whose error "
            f"‖ΔW − BA‖/‖ΔW‖ is within E; e.g. --target-error 0.3): {given}", EXIT_USAGE)


def _section(flag: str, main: dict[str, Any], tuning: dict[str, Any]
             ) -> dict[str, Any] | None:
    """A request section (distill, evaluate): present when its main flag is given; its
    tuning flags (`--distill-steps`, ...) alone are a usage error, not silently dropped."""
    (key, value), = main.items()
    given = {k: v for k, v in tuning.items() if v is not None}
    if not value:
        if given:
            flags = ", ".join(f"--{flag}-{k.replace('_', '-')}" for k in given)
            what = "DATASET" if flag == "distill" else "DATASET (repeat)"
            raise CommandFailure("bad option", f"{flags} go with --{flag} {what}",
                                 EXIT_USAGE)
        return None
    return {key: value, **given}


def _follow_until_interrupted(client: DeltahubClient, job: dict[str, Any]) -> dict[str, Any]:
    """`follow`; Ctrl-C stops following, not the job, and says so."""
    try:
        return follow(client, job)
    except KeyboardInterrupt:
        console.print(f"job {job['id']} keeps running; `deltahub jobs cancel {job['id']}` "
                      "to stop it", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def follow(client: DeltahubClient, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job, drawing its progress, until it ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[stage]}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
               TextColumn("{task.fields[message]}", style="dim"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("job", total=1.0, stage="queued", message="")
        while job["status"] in ("queued", "running"):
            time.sleep(_POLL_SECONDS)
            job = client.get_job(job["id"])
            progress = job["progress"]
            bar.update(task, completed=progress["fraction"], stage=progress["stage"],
                       message=(progress["message"] or "")[:60])
    return job


def _summary(job: dict[str, Any]) -> str:
    line = f"job {job['id']}: {job['status']}"
    if job["adapter"]:
        a = job["adapter"]
        line += f" -> {a['name']}@{a['version']} (adapter {a['id']})"
    if job["error"]:
        line += f"\n{job['error']['name']}: {job['error']['detail']}"
    return line


def _exit_status(job: dict[str, Any]) -> int:
    return {"failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(job["status"],
                                                                     EXIT_SUCCEEDED)


@jobs_app.command("ls")
def jobs_ls(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    model: Annotated[str | None, typer.Option(help="jobs of this fine-tune")] = None,
    method: Annotated[Method | None, typer.Option(help="bitdelta or lora")] = None,
    json: Json = False, url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """List jobs, newest first."""
    with connected(url, token) as client:
        jobs = list(client.list_jobs(status=status, model=model,
                                     method=method.value if method else None))
    if json:
        print_json(jobs)
        return
    rows = [[j["id"], j["status"], j["method"], j["model"], j["adapter_name"],
             f"{j['progress']['fraction']:.0%}", j["progress"]["stage"],
             j["error"]["name"] if j["error"] else ""] for j in jobs]
    print_table("jobs", ["id", "status", "method", "model", "adapter", "done", "stage",
                         "error"], rows)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(help="job id")], json: Json = False,
              url: Url = DEFAULT_URL, token: Token = None) -> None:
    """One job: its state, progress, attempts, error and adapter."""
    with connected(url, token) as client:
        job = client.get_job(job_id)
    if json:
        print_json(job)
        return
    print_table(f"job {job_id}", ["field", "value"], [
        ["status", job["status"]], ["method", job["method"]], ["model", job["model"]],
        ["base", job["base"]], ["adapter name", job["adapter_name"]],
        ["progress", f"{job['progress']['fraction']:.0%} {job['progress']['stage']}"],
        ["attempt", f"{job['attempt']} of {job['max_attempts']}"],
        ["params", ", ".join(f"{k}={v}" for k, v in job["params"].items() if v is not None)],
        ["created", job["created_at"]], ["finished", job["finished_at"] or ""]])
    stdout.print(_summary(job))


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="job id")],
                url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel a job: at once if queued, at its next progress point if running."""
    with connected(url, token) as client:
        job = client.cancel_job(job_id)
    what = "cancelled" if job["status"] == "cancelled" else "cancellation requested"
    stdout.print(f"job {job_id}: {what}")


def register(app: typer.Typer) -> None:
    app.command()(compress)
    app.add_typer(jobs_app, name="jobs")
