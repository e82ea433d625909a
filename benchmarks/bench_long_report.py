"""The long-conversation phase's summary, its table beside the targets, and its "today" baseline.

The baseline is the newest `benchmarks/results/long-baseline-*.json` (written by
`python -m benchmarks.bench_long --save-baseline`), with the commit it was measured on.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.bench_stats import ratio, spread

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINE_GLOB = "long-baseline-*.json"
REPO = Path(__file__).resolve().parent.parent
CORE_PATHS = (
    "workflows",
    "activities",
    "workers",
    "starters",
    "agentkeel",
    ":!agentkeel/dev",
    ":!starters/cmd_llm.py",
)
"""What the figures depend on (the platform, not the offline provider and its `keel llm` command):
the last commit touching these is the code under test."""
TARGETS = {
    "turn_bytes_max": 2048,
    "turn_bytes_flat_ratio_max": 1.10,
    "history_at_100_vs_today_max": 0.10,
    "ms_per_turn_at_10_vs_today_max": 1.10,
}


def _git(*args: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return ""


def git_commit() -> dict[str, Any]:
    """HEAD, whether tracked files differ from it, and the last commit that changed the platform's code."""
    return {
        "head": _git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "code": _git("log", "-1", "--format=%H", "--", *CORE_PATHS) or "unknown",
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
    }


def latest_baseline(folder: Path = RESULTS_DIR) -> dict[str, Any] | None:
    """Today's figures: for each N, those of the newest baseline file that measured it (so a file
    re-measuring only `--turns 10` replaces only that row), with the files and commits they came from.

    Returns None when there is no baseline file.
    """
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path in folder.glob(BASELINE_GLOB):
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(path.read_text())
            found.append((doc.get("started_at", ""), path.name, doc["results"]["long"]))
    if not found:
        return None
    summary: dict[str, Any] = {}
    sources: dict[str, dict[str, Any]] = {}
    for _, name, long in sorted(found, key=lambda item: (item[0], item[1])):
        for n, figures in long.get("summary", {}).items():
            summary[n] = figures
            sources[n] = {"file": name, "commit": long.get("commit", {})}
    newest = max(sources.values(), key=lambda src: src["file"])
    files = sorted({src["file"] for src in sources.values()})
    return {"file": ", ".join(files), "commit": newest["commit"], "sources": sources, "summary": summary}


# --------------------------------------------------------------------------- summary


def _values(rows: list[dict[str, Any]], *keys: str) -> list[float]:
    out: list[float] = []
    for row in rows:
        value: Any = row
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(value)
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min-max] of each figure over the repetitions of one N."""
    return {
        "status": sorted({row["status"] for row in rows}),
        "reps": len(rows),
        "tool_calls": spread(_values(rows, "tool_calls"), 0),
        "ms_per_turn": spread(_values(rows, "ms_per_turn"), 2),
        "cpu_ms_per_turn": spread(_values(rows, "cpu_ms_per_turn"), 2),
        "turn_ms_median": spread(_values(rows, "turn_ms_median"), 1),
        "history_bytes_reported": spread(_values(rows, "history_bytes_reported"), 0),
        "history_bytes_events": spread(_values(rows, "history_bytes_events"), 0),
        "last_tool_turn_bytes": spread(_values(rows, "last_tool_turn_bytes"), 0),
        "turn_10_bytes": spread(_values(rows, "at_turn", "10", "bytes"), 0),
        "turn_bytes_max": spread(_values(rows, "turn_bytes_max"), 0),
        "runs_in_chain": spread(_values(rows, "runs_in_chain"), 0),
        "store_stored_bytes": spread(_values(rows, "store", "stored_bytes"), 0),
        "store_objects": spread(_values(rows, "store", "objects"), 0),
        "model_last_messages": spread(_values(rows, "model", "last_request_messages"), 0),
        "model_expected_messages": spread(_values(rows, "model", "expected_last_request_messages"), 0),
        "model_every_message": all(row.get("model", {}).get("every_message") for row in rows),
        "model_last_request_bytes": spread(_values(rows, "model", "last_request_body_bytes"), 0),
        "load_avg_1m": spread(_values(rows, "load_avg_1m"), 2),
    }


# --------------------------------------------------------------------------- table


def human_bytes(value: float | None) -> str:
    """1,234 B, 12.3 KB, 4.56 MB."""
    if value is None:
        return "n/a"
    if value < 10_000:
        return f"{value:,.0f} B"
    if value < 1_000_000:
        return f"{value / 1000:,.1f} KB"
    return f"{value / 1e6:,.2f} MB"


def _cell(figure: dict[str, Any] | None, kind: str) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    med, low, high = figure["median"], figure["min"], figure["max"]
    if kind == "bytes":
        text, lo, hi = human_bytes(med), human_bytes(low), human_bytes(high)
        return text if lo == hi else f"{text} [{lo}-{hi}]"
    if kind == "ms":
        return f"{med:.1f} ms" if low == high else f"{med:.1f} [{low:.1f}-{high:.1f}] ms"
    if kind == "load":
        return f"{med:.2f}" if low == high else f"{med:.2f} [{low:.2f}-{high:.2f}]"
    return f"{med:.0f}" if low == high else f"{med:.0f} [{low:.0f}-{high:.0f}]"


ROWS = (
    ("stored history in all (server-reported)", "history_bytes_reported", "bytes"),
    ("same, summed event sizes", "history_bytes_events", "bytes"),
    ("bytes added by the last tool turn", "last_tool_turn_bytes", "bytes"),
    ("largest turn of the run", "turn_bytes_max", "bytes"),
    ("runs in the continue-as-new chain", "runs_in_chain", "count"),
    ("store bytes added (stored)", "store_stored_bytes", "bytes"),
    ("time per turn (wall / N)", "ms_per_turn", "ms"),
    ("median turn (history timestamps)", "turn_ms_median", "ms"),
    ("CPU per turn (server + worker + provider)", "cpu_ms_per_turn", "ms"),
    ("load average (1 min) after the run", "load_avg_1m", "load"),
    ("tool calls made", "tool_calls", "count"),
    ("messages in the model's last request", "model_last_messages", "count"),
    ("messages the conversation holds", "model_expected_messages", "count"),
    ("size of the model's last request", "model_last_request_bytes", "bytes"),
)


def _short(commit: dict[str, Any] | None) -> str:
    if not commit:
        return "?"
    code, head = str(commit.get("code", ""))[:7], str(commit.get("head", ""))[:7]
    return code if code == head or not head else f"{code}, head {head}"


def figures_table(result: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """Each figure per N, beside the baseline's."""
    today = (baseline or {}).get("summary", {})
    head = ("figure", "turns", "now", "today", "now / today")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, kind in ROWS:
        for n, summary in result["summary"].items():
            now, then = summary.get(key), today.get(n, {}).get(key)
            r = ratio(now, then) if isinstance(now, dict) and isinstance(then, dict) else None
            lines.append(f"| {label} | {n} | {_cell(now, kind)} | {_cell(then, kind)} | {r if r else ''} |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


def _median(summary: dict[str, Any], key: str) -> float | None:
    figure = summary.get(key) or {}
    return figure.get("median")


def _flat_row(summary: dict[str, Any]) -> tuple[str, str, str] | None:
    """Bytes of turn 10 and of the last tool turn of the longest run."""
    if not summary:
        return None
    largest = max(summary, key=int)
    first = _median(summary[largest], "turn_10_bytes")
    last = _median(summary[largest], "last_tool_turn_bytes")
    flat = round(last / first, 3) if first and last else None
    ok = None
    if flat is not None and last is not None:
        ok = flat <= TARGETS["turn_bytes_flat_ratio_max"] and last <= TARGETS["turn_bytes_max"]
    return (
        f"bytes added per turn flat from turn 10 to turn {largest} "
        f"(≤ ×{TARGETS['turn_bytes_flat_ratio_max']}) and ≤ {TARGETS['turn_bytes_max']:,} B",
        f"turn 10: {human_bytes(first)}, turn {largest}: {human_bytes(last)} (×{flat})",
        _verdict(ok),
    )


def _history_row(summary: dict[str, Any], today: dict[str, Any]) -> tuple[str, str, str]:
    label = "total history at turn 100 ≤ a tenth of today's"
    now, then = (
        _median(summary.get("100", {}), "history_bytes_reported"),
        _median(today.get("100", {}), "history_bytes_reported"),
    )
    if now is None or then is None:
        return (label, "n/a (no 100-turn run, or no baseline)", "n/a")
    r = round(now / then, 3)
    return (
        label,
        f"{human_bytes(now)} vs {human_bytes(then)} (×{r})",
        _verdict(r <= TARGETS["history_at_100_vs_today_max"]),
    )


def _time_row(summary: dict[str, Any], today: dict[str, Any]) -> tuple[str, str, str]:
    """Wall time per turn at N=10 against today's; CPU per turn beside it, which machine load moves less."""
    label = f"time per turn at turn 10 within ×{TARGETS['ms_per_turn_at_10_vs_today_max']} of today's"
    now, then = summary.get("10", {}), today.get("10", {})
    wall_now, wall_then = _median(now, "ms_per_turn"), _median(then, "ms_per_turn")
    if wall_now is None or wall_then is None:
        return (label, "n/a (no 10-turn run, or no baseline)", "n/a")
    r = round(wall_now / wall_then, 3)
    ok = r <= TARGETS["ms_per_turn_at_10_vs_today_max"]
    text = f"{wall_now:.1f} ms vs {wall_then:.1f} ms (×{r})"
    cpu_now, cpu_then = _median(now, "cpu_ms_per_turn"), _median(then, "cpu_ms_per_turn")
    cpu_r = round(cpu_now / cpu_then, 3) if cpu_now and cpu_then else None
    if cpu_r is not None:
        text += f"; CPU {cpu_now:.1f} vs {cpu_then:.1f} ms (×{cpu_r})"
    load_now, load_then = _median(now, "load_avg_1m"), _median(then, "load_avg_1m")
    if load_now is not None and load_then is not None:
        text += f"; load {load_now:.2f} vs {load_then:.2f}"
    verdict = _verdict(ok)
    if not ok and cpu_r is not None and cpu_r <= TARGETS["ms_per_turn_at_10_vs_today_max"]:
        verdict += " on wall time; CPU within: rerun on a quiet machine"
    return (label, text, verdict)


def _messages_row(summary: dict[str, Any]) -> tuple[str, str, str] | None:
    s = summary.get("1000")
    if s is None:
        return None
    got, want = _median(s, "model_last_messages"), _median(s, "model_expected_messages")
    return (
        "the model's request at turn 1,000 holds every message",
        f"{got:.0f} of {want:.0f} messages" if got is not None and want is not None else "n/a",
        _verdict(None if got is None else bool(s.get("model_every_message"))),
    )


def target_rows(result: dict[str, Any], baseline: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the four targets of issue 13."""
    summary, today = result["summary"], (baseline or {}).get("summary", {})
    rows = [
        _flat_row(summary),
        _history_row(summary, today),
        _time_row(summary, today),
        _messages_row(summary),
    ]
    return [row for row in rows if row is not None]


def _sources(sources: dict[str, dict[str, Any]]) -> str:
    """`file, code at X` per baseline file used, with its turns when several files are."""
    by_file: dict[str, list[str]] = {}
    for n, src in sources.items():
        by_file.setdefault(f"{src['file']}, code at {_short(src['commit'])}", []).append(n)
    if len(by_file) == 1:
        return next(iter(by_file))
    return "; ".join(f"{where} ({', '.join(ns)} turns)" for where, ns in by_file.items())


def long_table(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The phase's tables: figures beside today's, then the targets."""
    baseline = baseline if baseline is not None else latest_baseline()
    source = (
        "today = " + _sources(baseline["sources"])
        if baseline
        else "no baseline file: run `python -m benchmarks.bench_long --save-baseline` on today's code"
    )
    lines = [f"8. long conversation ({source}; now: code at {_short(result.get('commit'))})", ""]
    lines.append(figures_table(result, baseline))
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in target_rows(result, baseline)]
    if where := _breakdown(result):
        lines += ["", where]
    return "\n".join(lines)


def _breakdown(result: dict[str, Any]) -> str:
    """Where the longest run's last tool turn put its bytes, by kind of event."""
    runs = result.get("runs", {})
    if not runs:
        return ""
    largest = max(runs, key=int)
    parts = (runs[largest][0].get("last_tool_turn_by_event") or {}) if runs[largest] else {}
    if not parts:
        return ""
    shown = ", ".join(f"{kind.lower()} {size:,}" for kind, size in parts.items())
    return f"bytes of tool turn {largest} by event: {shown}"
