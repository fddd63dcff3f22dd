"""The demo's two answers in one place: is each student more accurate than its teacher, and flatter?

Pham et al. claim both at once for the same models (their Table 2 and Figs. 4-5). ``curvature_spec`` is
the analysis a run with ``curvature=True`` queues after training (the Hessian page's default λ_max and
trace settings, so that page then finds them cached); ``verdicts`` reads the kept models' test accuracy
and those results and says, per student, which of the three comparisons it wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from sdcore.analysis.runner import AnalysisSpec, cached_results
from sdcore.runs import RoundSummary, Run


def curvature_spec(rounds: tuple[int, ...] | list[int]) -> AnalysisSpec:
    """λ_max (top-20 Lanczos) and trace of ``rounds``, as the Hessian page computes them by default."""
    return AnalysisSpec(rounds=tuple(rounds), density=False)


@dataclass(frozen=True)
class Verdict:
    round: int  # a student (>= 1), compared with round 0 (the teacher)
    acc: float  # test accuracy (%) of the kept model
    lam: float  # λ_max of the training loss at the kept weights
    trace: float  # Hessian trace there
    teacher_acc: float
    teacher_lam: float
    teacher_trace: float

    @property
    def more_accurate(self) -> bool:
        return self.acc > self.teacher_acc

    @property
    def flatter(self) -> bool:
        """Smaller λ_max *and* smaller trace than the teacher's."""
        return self.lam < self.teacher_lam and self.trace < self.teacher_trace

    def sentence(self, name: str) -> str:
        acc = "more accurate" if self.more_accurate else "not more accurate"
        flat = ("flatter" if self.flatter
                else "sharper" if self.lam > self.teacher_lam and self.trace > self.teacher_trace
                else "neither flatter nor sharper on both measures")
        return (f"{name} is **{acc}** than the teacher ({self.acc:.2f}% vs {self.teacher_acc:.2f}%) and **{flat}** "
                f"(λ_max {self.lam:.3g} vs {self.teacher_lam:.3g}; "
                f"trace {self.trace:.3g} vs {self.teacher_trace:.3g}).")


def verdicts(summary_rounds: Sequence[RoundSummary], results: dict[tuple[str, int], Any]) -> list[Verdict]:
    """One Verdict per student whose accuracy, λ_max and trace are all known (and the teacher's)."""
    acc = {r.round: r.test_acc for r in summary_rounds}

    def known(k: int) -> bool:
        return k in acc and ("eigen", k) in results and ("trace", k) in results

    if not known(0):
        return []
    t_lam, t_trace = results[("eigen", 0)].values[0], results[("trace", 0)].trace
    return [Verdict(k, acc[k], results[("eigen", k)].values[0], results[("trace", k)].trace, acc[0], t_lam,
                    t_trace) for k in sorted(acc) if k > 0 and known(k)]


def run_verdicts(run: Run) -> tuple[list[Verdict], dict[tuple[str, int], Any], int]:
    """(verdicts, the cached curvature results, how many are still missing) for a finished run's rounds."""
    summary = run.summary()
    rounds = summary.rounds if summary is not None else ()
    if not rounds:
        return [], {}, 0
    results, missing = cached_results(run, curvature_spec([r.round for r in rounds]))
    return verdicts(rounds, results), results, missing
