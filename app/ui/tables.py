"""The rounds table: per round, test accuracy and the change against the teacher, readable without colour."""
from __future__ import annotations

import pandas as pd

from sdcore.plots import round_name
from sdcore.runs import RunSummary


def rounds_table(summary: RunSummary | None, method: str):
    """Per finished round: test accuracy of the kept model and the change against the teacher, coloured."""

    rows = summary.rounds if summary is not None else ()
    if not rows:
        return None
    teacher = rows[0].test_acc
    df = pd.DataFrame([{  # numbers in the frame (its CSV); the arrows are the Styler's formatting only
        "model": round_name(r.round, method), "test accuracy (%)": r.test_acc,
        "vs teacher (points)": r.test_acc - teacher, "kept epoch": r.best_epoch} for r in rows])
    if len(rows) == 1:  # one network (or a teacher alone): nothing to compare it with
        return df.drop(columns="vs teacher (points)").style.format({"test accuracy (%)": "{:.2f}"})
    delta = ["vs teacher (points)"]
    return (df.style.format({"test accuracy (%)": "{:.2f}"}).format(arrow, subset=delta)
            .format(lambda _: "—", subset=(df.index[:1], delta))  # the teacher's own row: 0 in the CSV
            .map(delta_color, subset=delta))


def arrow(delta: float) -> str:
    """"↑ +1.95" / "↓ -0.40" / "= +0.00": the change against the teacher, readable without colour."""
    return f"{'↑' if delta > 0 else '↓' if delta < 0 else '='} {delta:+.2f}"


def delta_color(cell: str | float | None) -> str:
    """Green for a gain, red for a loss: a number's sign, or a text cell's ↑ / ↓ (from ``arrow``)."""
    if isinstance(cell, (int, float)):
        up, down = cell > 0, cell < 0  # NaN (the teacher's own row) is neither
    else:
        up, down = "↑" in (cell or ""), "↓" in (cell or "")
    if up:
        return "color: #2b8a3e; font-weight: 600"
    return "color: #c92a2a; font-weight: 600" if down else ""
