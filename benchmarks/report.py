"""The results table (plain text and Markdown) and the JSON results file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.measure import Figure

COLUMNS = ("figure", "unit", "runs", "median", "p99", "reference", "ratio", "target", "met")


def format_number(value: float | None) -> str:
    """Format ``value`` with about three significant digits; "-" for None."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cells(figure: Figure) -> list[str]:
    ratio = figure.ratio
    met = {True: "yes", False: "NO", None: ""}[figure.met]
    return [
        f"{figure.group}: {figure.name}",
        figure.unit,
        "" if figure.runs is None else f"{figure.runs:,}",
        format_number(figure.median) if figure.median is not None
        else "failed" if figure.note.startswith("failed") else "skipped",
        format_number(figure.p99) if figure.p99 is not None else "",
        format_number(figure.reference) if figure.reference is not None else "",
        f"{ratio:.1f}x" if ratio is not None else "",
        figure.target or "",
        met,
    ]


def render_table(figures: Sequence[Figure]) -> str:
    """Return the figures as an aligned plain-text table, notes listed below it."""
    rows = [list(COLUMNS), *(_cells(figure) for figure in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if i in (0, 1, 7) else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    notes = [f"- {figure.group}: {figure.name}: {figure.note}" for figure in figures
             if figure.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def render_markdown(figures: Sequence[Figure]) -> str:
    """Return the figures as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * 5 + ["---"] * 2) + " |"]
    for figure in figures:
        cells = [cell.replace("|", "\\|") for cell in _cells(figure)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_header(meta: dict[str, Any]) -> str:
    """Return the lines that describe the machine, software, data and command of a run."""
    machine = meta["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    lines = [
        f"Command:    {meta['command']}",
        f"Mode:       {meta['mode']}  (started {meta['started_at']}, "
        f"{meta['duration_seconds']:.0f} s)",
        f"Machine:    {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['cpu_model']}, {machine['platform']}",
        f"Python:     {machine['python']}"
        + (f", fixed pure-Python workload {machine['interpreter_speed_ms']:.0f} ms"
           if machine.get("interpreter_speed_ms") else ""),
        f"Packages:   {packages}",
        f"Load:       1-minute load average {meta['load_average']['start'][0]:.2f} at the "
        f"start, {meta['load_average']['end'][0]:.2f} at the end",
        f"PostgreSQL: {meta.get('postgres') or 'not reachable'}",
        f"Data:       {meta['data']}",
        f"Bundle:     {meta['bundle']}",
    ]
    lines += [f"Note:       {note}" for note in meta.get("notes", [])]
    lines += [f"ERROR:      {error}" for error in meta.get("errors", [])]
    return "\n".join(lines)


def write_results(path: Path, meta: dict[str, Any], figures: Sequence[Figure]) -> Path:
    """Write the JSON results to ``path`` and the Markdown table beside it; return the latter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "figures": [figure.to_dict() for figure in figures]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    markdown = path.with_suffix(".md")
    markdown.write_text(render_header(meta).replace("\n", "  \n") + "\n\n"
                        + render_markdown(figures) + "\n")
    return markdown
