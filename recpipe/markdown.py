"""Markdown for the reports: tables, and the params table each report ends with."""

from __future__ import annotations

from collections.abc import Iterable


def table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    """The lines of a markdown table: the header, its rule, one line per row of cells. A bar in a
    cell is escaped (it would end the cell)."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(head), "|" + " --- |" * len(head), *(line(cells) for cells in rows)]


def param_rows(params: dict, prefix: str = "") -> list[list[str]]:
    """[name, value] rows: nested mappings become one dotted name per leaf (lora.rank), lists
    and tuples are joined by commas."""
    rows = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += param_rows(value, f"{name}.")
        else:
            rows.append([name, ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)])
    return rows


def params_section(params: dict) -> list[str]:
    """The reports' closing section: the params behind the run, one table row each."""
    return ["## Params", "", *table(["param", "value"], param_rows(params)), ""]
