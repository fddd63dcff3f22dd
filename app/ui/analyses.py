"""What the analysis pages share: progress lines, computing missing results in the background, baselines.

Every analysis is a background job (``JobManager.submit_analysis``) whose result is cached in the run
folder: ``run_results`` / ``run_result`` read the cache and queue what is missing as soon as a page opens
(sdcore.analysis.registry's kinds); ``analysis_results`` offers a Compute button for runner's curvature
and loss-surface results, which take minutes. Both follow their jobs with ``follow_jobs``."""
from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from app.ui.buttons import preset_button
from app.ui.errors import USER_ERRORS, shown_errors
from app.ui.state import has_exits, manager, run_config, run_infos, store
from app.ui.text import chart_text, code, plain
from sdcore.analysis.registry import Request, get, peek
from sdcore.analysis.runner import cached_results, progress_text
from sdcore.runs import Run


def analysis_text(h) -> str:
    """An analysis job's line: stage, round, how far, time left (sdcore.analysis.runner.progress_text)."""
    cfg = run_config(h.run_id)
    return progress_text(h.progress(), cfg.method if cfg is not None else "kd")


def _latest(run_id: str, request: Any = None):
    """The newest analysis job of ``run_id`` (for ``request`` where given) this server has taken, or None."""
    return next((h for h in reversed(manager().jobs()) if h.kind == "analysis" and h.run_id == run_id
                 and (request is None or h.request == request)), None)


def follow_jobs(jobs: list, key: str) -> None:
    """A progress line (stage, how far, time left) with Cancel per job, in a fragment re-run every second
    while any runs; a full rerun once they have all ended shows their results. A failed or cancelled job
    says so. Worker threads never touch Streamlit: this reads their progress snapshots."""
    running = any(not h.done for h in jobs)

    @st.fragment(run_every=1.0 if running else None)
    def follow() -> None:
        for i, h in enumerate(jobs):
            p = h.progress()
            if not h.done:
                st.progress(p.fraction, text=f"{code(h.run_id)} · {analysis_text(h)}" if len(jobs) > 1
                            else analysis_text(h))
                if st.button("Cancel", icon=":material/stop_circle:", key=f"cancel-analysis-{key}-{i}"):
                    h.cancel()
            elif p.status == "failed":
                st.error(f"The analysis of {code(h.run_id)} failed: {plain(p.error)}")
            elif p.status == "cancelled":
                st.warning(f"The analysis of {code(h.run_id)} was cancelled.")
        if running and all(h.done for h in jobs):  # they just ended: a full rerun shows the results
            st.rerun()

    follow()


def compute_in_background(run_id: str, spec, missing: int, *, per_round: str) -> None:
    """Offer to compute missing curvature / loss-surface results as a background job (a click: they take
    minutes), then follow it until it ends. The page calls st.stop() after this."""
    job = _latest(run_id)
    running = job is not None and not job.done
    st.info(f"{missing} result(s) for these settings are not computed yet. They run in the background "
            f"({per_round}) and are kept in the run folder, so this page opens instantly next time.")
    if not running and st.button("Compute", type="primary", icon=":material/calculate:", key=f"compute-{run_id}"):
        with shown_errors():  # the caller stops the page after this anyway
            manager().submit_analysis(run_id, spec)
        st.rerun()
    if job is not None:
        follow_jobs([job], run_id)


def run_results(runs: list[Run], kind: str, settings: Any = None, *, key: str) -> dict[str, Any]:
    """Each run's cached result of a registered analysis ``kind`` (run id -> result, the ready ones only);
    ``key`` tells this call's widgets apart on a page.

    A run missing it gets a background job at once (queued behind training on its device), and the page
    shows its progress line with Cancel until it ends, then reruns; a failed or cancelled job is shown with
    a button to try again rather than queued anew by itself. A run's USER_ERRORS are shown and it is left out.
    """
    request = Request(kind, settings).validate()
    out, jobs, again, queued = {}, [], [], False
    for run in runs:
        try:
            found, result = peek(run, kind, request.settings, device=request.device)
            if found:
                out[run.id] = result
                continue
            job = _latest(run.id, request)
            if job is None or job.progress().status == "done":  # none yet, or a round finished since
                job, queued = manager().submit_analysis(run.id, request), True
        except USER_ERRORS as e:
            st.error(f"{code(run.id)}: {plain(e)}" if len(runs) > 1 else plain(e), icon=":material/error:")
            continue
        jobs.append(job)
        if job.done:  # failed or cancelled
            again.append(run)
    rerun = f"queued-rerun-{key}"
    if queued and not st.session_state.get(rerun):  # once more from the top: the sidebar lists the new jobs
        st.session_state[rerun] = True
        st.rerun()
    st.session_state[rerun] = False
    running = [j for j in jobs if not j.done]
    if running:
        st.info(f"Computing {get(kind).label} in the background for {len(running)} run(s); the result is kept in "
                "each run's folder, so this page opens instantly next time.", icon=":material/hourglass_top:")
    if jobs:
        follow_jobs(jobs, key)
    if again and st.button("Compute again", icon=":material/refresh:", key=f"again-{key}"):
        with shown_errors():
            for run in again:
                manager().submit_analysis(run.id, request)
        st.rerun()
    return out


def run_result(run: Run, kind: str, settings: Any = None, *, key: str) -> Any:
    """``run_results`` for one run: its result, or the page stops while its job runs (or after its error)."""
    out = run_results([run], kind, settings, key=key)
    if run.id not in out:
        st.stop()
    return out[run.id]


def baseline_picker(run: Run, key: str) -> list[tuple[str, Run]]:
    """Other runs whose teacher (round 0) the analysis pages draw next to this run's rounds, e.g. a
    SAM-trained model (Pham et al. compare students' flatness with SAM's): [(display name, run)]."""
    if not any((c := run_config(i.id)) is not None and c.optim.sam_rho is not None for i in run_infos()):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.caption("No SAM run yet: its teacher is the flat-minimum baseline Pham et al. compare students with.")
        with c2:
            preset_button("demo-sam")
    infos = [i for i in run_infos() if i.rounds_done > 0 and i.status != "unreadable" and not has_exits(i)
             and i.id != run.id]
    if not infos:
        return []
    by_id = {i.id: i for i in infos}

    def name(run_id: str) -> str:
        cfg = store().get(run_id).config()
        what = f"SAM ρ={cfg.optim.sam_rho:g}" if cfg.optim.sam_rho is not None else cfg.name
        return f"{what} · {run_id[:15]}"

    chosen = st.multiselect("Baselines: other runs' teacher (round 0), e.g. a SAM run (`demo-sam` preset)",
                            list(by_id), format_func=name, key=key,
                            help="Computed on the baseline run's own training split: comparable when both "
                                 "runs share data and seed.")
    return [(chart_text(name(i)), store().get(i)) for i in chosen]  # the name is a legend entry


def baseline_results(results: dict, baselines: list[tuple[str, Run]], spec, *, per_round: str) -> list:
    """Add each baseline run's teacher (round 0) to ``results`` under its display name (a str key in
    place of the round number), computed like ``analysis_results``; returns the keys in plot order."""
    for name, other in baselines:
        got = analysis_results(other, dataclasses.replace(spec, rounds=(0,), interpolate=False), per_round=per_round)
        results.update({(kind, name): v for (kind, _), v in got.items()})
    return list(spec.rounds) + [name for name, _ in baselines]


def analysis_results(run: Run, spec, *, per_round: str) -> dict:
    """The cached results for ``spec``; if some are missing, offer to compute them and stop the page."""
    with shown_errors():
        results, missing = cached_results(run, spec)
    if missing:
        compute_in_background(run.id, spec, missing, per_round=per_round)
        st.stop()
    return results
