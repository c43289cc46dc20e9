"""``python -m bench.phases``: each perf sample of PostgreSQL is charged to one phase by
the functions on its stack, and the table adds up. Pure logic: synthetic stacks and
runs, no perf, no server (the tool itself needs perf and is run by hand)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Innermost first, as perf script prints a call chain (real function names of PostgreSQL).
BACKEND = ["PostgresMain", "BackendMain", "postmaster_child_launch", "PostmasterMain", "main"]
RUN = ["ExecModifyTable", "standard_ExecutorRun", "ProcessQuery", "PortalRun", *BACKEND]
FINISH = ["standard_ExecutorFinish", "ProcessQuery", "PortalRun", *BACKEND]
FEED = ["heap_insert", "ExecInsert", "standard_ExecutorRun", "_SPI_execute_plan",
        "plpgsql_exec_trigger", "ExecCallTriggerFunc", "afterTriggerInvokeEvents",
        "AfterTriggerEndQuery", *FINISH]  # fmt: skip
FK = ["index_getnext_slot", "standard_ExecutorRun", "_SPI_execute_plan", "RI_FKey_check",
      "RI_FKey_check_ins", "ExecCallTriggerFunc", "afterTriggerInvokeEvents",
      "AfterTriggerEndQuery", *FINISH]  # fmt: skip


@pytest.fixture
def phases(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ is the repository's, not installed
    import bench.phases  # noqa: PLC0415 -- needs the path above

    return bench.phases


def test_each_stack_gets_the_phase_of_what_it_was_doing(phases: ModuleType) -> None:
    assert phases.phase(RUN) == "executing the statements' plans"
    assert phases.phase(FEED).startswith("after triggers: PL/pgSQL")
    assert phases.phase(FK) == "after triggers: foreign-key checks"
    cte = ["ExecInsert", "ExecModifyTable", "ExecPostprocessPlan", *FINISH]
    assert phases.phase(cte).startswith("data-modifying CTEs")
    # planning inside a trigger's statement is planning, not the trigger
    planned = ["standard_planner", "pg_plan_query", "GetCachedPlan", *FEED]
    assert phases.phase(planned) == "planning"
    started = ["RelationCacheInitializePhase3", "InitPostgres", *BACKEND]
    assert phases.phase(started).startswith("connection start-up")
    assert phases.phase(["CommitTransaction", "finish_xact_command", *BACKEND]) == "commit"
    assert phases.phase(["pq_getbyte", *BACKEND]).startswith("client protocol")
    assert phases.phase(["ProcessInterrupts", *BACKEND]) == "other work of backends"
    assert phases.phase(["heap_vacuum_rel", "AutoVacWorkerMain", "main"]) == "autovacuum"
    assert phases.phase(["XLogBackgroundFlush", "WalWriterMain"]).startswith("WAL writer")
    assert phases.phase(["fork", "ServerLoop", "PostmasterMain"]) == phases.POSTMASTER
    assert phases.phase([]) == phases.POSTMASTER


def test_the_table_reports_every_phase_per_email_and_the_rounds(phases: ModuleType) -> None:
    samples = [RUN] * 300 + [FEED] * 60 + [FK] * 40
    counted = phases.phases(samples)
    assert sum(counted.values()) == 400
    assert counted["after triggers: foreign-key checks"] == 40

    def one(counts: dict[str, int], pg_us: float) -> dict[str, object]:
        per_email = {k: v / phases.FREQUENCY / 10 * 1e6 for k, v in counts.items()}
        return {"rate": 1000.0, "pg_us": pg_us, "phases": per_email}

    head = [one(counted, 90.0), one(counted, 80.0)]
    ref = [one(phases.phases([RUN] * 300 + [FK] * 40), 60.0)] * 2
    lines = phases.table({"HEAD": head, "REF": ref}, 10)
    text = "\n".join(lines)
    feed = next(line for line in lines if "PL/pgSQL" in line)
    per_sample = 1 / phases.FREQUENCY / 10 * 1e6  # µs per email of one sample
    assert feed == (
        f"| {phases.phase(FEED)} | {60 * per_sample:.1f} | 0.0 | {60 * per_sample:+.1f} |"
    )
    assert f"| {400 * per_sample:.1f} | {340 * per_sample:.1f} |" in text  # the perf totals
    assert "| 85.0 | 60.0 | +25.0 |" in text  # the counter's medians
    assert "round by round: 150%, 133%" in text
