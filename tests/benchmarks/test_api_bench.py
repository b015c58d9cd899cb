"""benchmarks/api_bench.py's pure pieces: its options, /proc parsing and table cells
(no timing: the benchmark itself is run by hand, see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from benchmarks.api_bench import (
    HEADER,
    Result,
    Row,
    Source,
    parse_clients,
    parse_databases,
    parse_proc_stat,
    parse_source,
    psycopg_url,
    ratio_cell,
    tree_cpu_seconds,
)

ROOT = Path(__file__).resolve().parents[2]


def test_sources_are_labelled_checkouts(tmp_path: Path) -> None:
    assert parse_source(f"old={ROOT}") == Source("old", ROOT)
    assert parse_source(str(ROOT)) == Source(ROOT.name, ROOT)
    with pytest.raises(argparse.ArgumentTypeError, match="not a deltahub checkout"):
        parse_source(f"old={tmp_path}")


def test_client_counts_and_databases() -> None:
    assert parse_clients("1,50,200") == [1, 50, 200]
    assert parse_databases("sqlite") == ["sqlite"]
    for bad in ("", "0", "1,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_clients(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_databases("sqlite,mysql")


def test_postgres_urls_get_the_psycopg_driver_and_a_database() -> None:
    assert psycopg_url("postgresql://postgres@127.0.0.1:5432") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    assert psycopg_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


def test_proc_stat_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    line = "4242 (uvicorn (x) y) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 30 0 0 20 0 4"
    assert parse_proc_stat(line) == (17, 280)


def test_the_cpu_of_a_process_tree_includes_this_process() -> None:
    times = os.times()
    assert tree_cpu_seconds(os.getpid()) >= (times.user + times.system) * 0.5


def test_a_304_is_an_answer_for_the_conditional_route() -> None:
    result = Result("conditional", 1, expect=304)
    result.add(304, 0.002)
    result.add(200, 0.010)  # the body after all: an error for this route
    result.seconds, result.requests, result.server_cpu = 1.0, 2, 0.004
    assert result.failed == 1
    assert result.per_second == 1.0
    assert result.cpu_ms == 2.0


def test_cells_show_each_source_and_the_ratio() -> None:
    assert ratio_cell([10.0, 2.5], 2) == "10.00 → 2.50 (×0.25)"
    assert ratio_cell([4.0], 1) == "4.0"
    assert ratio_cell([None, 3.0], 1) == "n/a → 3.0"
    result = Result("r", 1)
    result.add(200, 0.001)
    result.seconds, result.requests = 1.0, 1
    assert len(Row("sqlite", "r", 1, [result, None], [3, None]).cells()) == len(HEADER)
