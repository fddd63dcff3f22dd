"""The analysis registry: every kind listed, each result round-trips through its one cache record, a damaged
record recomputes, and the one job path computes any kind in the background with progress and cancel."""
import dataclasses
import json
import threading

import pytest
import torch

from sdcore.analysis import registry
from sdcore.analysis.registry import Request, get_or_compute, peek
from sdcore.config import ConfigError
from sdcore.runs import RunError

KINDS = ("agreement", "calibration", "exit_features", "exit_latency", "gallery", "robustness", "teacher_student",
         "test_logits")
ON_BYOT = ("exit_features", "exit_latency")  # the others need a multi-round KD run


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    root, tiny = tmp_path_factory.mktemp("runs"), {"epochs": 1, "data.subset": 200, "model.width": 0.25}
    return {"kd": trained(rounds=1, root=root, **tiny), "byot": trained("demo-byot", root=root, **tiny)}


def fresh(runs, kind: str, tmp_path):
    """A private copy of the run ``kind`` applies to, nothing cached in it yet."""
    import shutil

    from sdcore.runs import RunStore

    src = runs["byot" if kind in ON_BYOT else "kd"]
    shutil.copytree(src.path, tmp_path / src.id)
    return RunStore(tmp_path).get(src.id)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and same(dataclasses.asdict(a), dataclasses.asdict(b))
    return a == b


def test_the_registry_lists_every_kind_with_its_entry():
    assert registry.kinds() == sorted(KINDS)
    for name in KINDS:
        entry = registry.get(name)
        assert entry.name == name and entry.label and entry.version >= 1
        assert entry.settings().validate() == entry.settings().validate()  # defaults validate
    with pytest.raises(ConfigError, match="analysis kind must be one of"):
        registry.get("nope")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_round_trips_through_its_cache_record(runs, kind, monkeypatch, tmp_path):
    import dataclasses

    run = fresh(runs, kind, tmp_path)
    assert peek(run, kind) == (False, None)
    result = get_or_compute(run, kind)
    (path,) = (run.path / "analysis").glob(f"{kind}-*.json")
    record = json.loads(path.read_text())
    assert set(record) == {"kind", "version", "settings", "finished_rounds", "result", "device", "seconds", "created"}
    assert record["kind"] == kind and record["version"] == registry.get(kind).version
    assert record["finished_rounds"] == run.finished_rounds() and record["seconds"] > 0
    assert path.name == f"{kind}-{registry.settings_hash(record['settings'])}.json"
    fail = lambda *a, **k: pytest.fail("recomputed")  # noqa: E731
    monkeypatch.setitem(registry._KINDS, kind, dataclasses.replace(registry.get(kind), compute=fail))
    found, again = peek(run, kind)
    assert found and same(again, result)
    assert same(get_or_compute(run, kind), result)


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_or_stale_record_is_recomputed(runs, kind, tmp_path):
    run = fresh(runs, kind, tmp_path)
    first = get_or_compute(run, kind)
    (path,) = (run.path / "analysis").glob(f"{kind}-*.json")
    for damage in ("{damaged", json.dumps({**json.loads(path.read_text()), "version": 0}),
                   json.dumps({**json.loads(path.read_text()), "finished_rounds": [0, 99]}),
                   json.dumps({**json.loads(path.read_text()), "result": "nonsense"})):
        path.write_text(damage)
        assert peek(run, kind) == (False, None), damage[:40]
        again = get_or_compute(run, kind)
        if kind != "exit_latency":  # timings differ from one measurement to the next
            assert same(again, first)


def test_a_job_computes_any_kind_with_progress_then_the_page_reads_the_cache(runs, tmp_path):
    from sdcore.analysis.runner import progress_text
    from sdcore.jobs import JobManager

    fresh(runs, "calibration", tmp_path)
    manager = JobManager(tmp_path)
    try:
        seen = []
        h = manager.submit_analysis(runs["kd"].id, Request("calibration"),
                                    on_event=lambda e: seen.append((e, h.progress())))
        assert h.kind == "analysis" and h.wait(120) and h.progress().status == "done", h.progress().error
        events = [e for e, _ in seen]
        assert events[-1].kind == "done" and [e.fraction for e in events] == sorted(e.fraction for e in events)
        _, p = seen[1]
        assert p.metrics["analysis"].startswith("calibration · round") and p.round == 0
        line = progress_text(p)
        assert line.startswith("calibration · round") and "%" in line
        found, result = peek(manager.store.get(runs["kd"].id), "calibration")
        assert found and [m.round for m in result] == [0, 1]
        with pytest.raises(ConfigError):
            manager.submit_analysis(runs["kd"].id, Request("calibration", registry.get("robustness").settings()))
        with pytest.raises(RunError, match="exit latency needs a BYOT run"):
            manager.submit_analysis(runs["kd"].id, Request("exit_latency"))
    finally:
        manager.shutdown()


def test_cancel_stops_an_analysis_job_between_corruptions_and_caches_nothing(runs, tmp_path):
    from sdcore.jobs import JobManager

    fresh(runs, "robustness", tmp_path)
    manager = JobManager(tmp_path)
    started = threading.Event()
    try:
        h = manager.submit_analysis(runs["kd"].id, Request("robustness"),
                                    on_event=lambda e: e.fraction > 0 and started.set())
        assert started.wait(120)
        h.cancel()
        assert h.wait(120) and h.progress().status == "cancelled"
        assert peek(manager.store.get(runs["kd"].id), "robustness") == (False, None)
        assert not list((tmp_path / runs["kd"].id / "analysis").glob("robustness-*.json"))
    finally:
        manager.shutdown()


def test_a_new_kind_is_one_entry_and_its_function(runs, tmp_path, monkeypatch):
    """A kind registered with its compute function is cached, listed and run as a job with no other change."""
    from sdcore.jobs import JobManager

    @dataclasses.dataclass(frozen=True)
    class Settings:
        scale: float = 2.0

        def validate(self):
            return self

    def compute(run, settings, *, device, progress, should_stop):
        progress(0.5, "counting")
        return {"rounds": len(run.finished_rounds()) * settings.scale}

    toy = registry.AnalysisKind(name="toy", label="toy count", settings=Settings, compute=compute,
                                dump=lambda r: r, load=lambda r: r, version=1)
    monkeypatch.setitem(registry._KINDS, "toy", toy)
    run = fresh(runs, "calibration", tmp_path)  # the KD run: teacher and one student
    assert "toy" in registry.kinds() and peek(run, "toy") == (False, None)
    manager = JobManager(tmp_path)
    try:
        h = manager.submit_analysis(run.id, Request("toy", Settings(scale=3.0)))
        assert h.wait(60) and h.progress().status == "done", h.progress().error
    finally:
        manager.shutdown()
    assert peek(run, "toy", Settings(scale=3.0)) == (True, {"rounds": 6.0})
    assert peek(run, "toy") == (False, None)  # other settings, another record
