"""How long each dashboard page takes to render with 10 finished runs in the library.

    python benchmarks/bench_pages.py [--repeats 5]

Trains 10 small finished runs (8 KD runs: 2 configs × 4 seeds, and 2 BYOT runs) into a temporary
runs folder, then renders every page through Streamlit's AppTest: the first render (cold caches: a page
whose analyses are not cached yet queues them as background jobs and shows their progress), how long
those jobs then take in the background (the page is usable meanwhile), the first render once they are
done, and the median of the following renders (what a user waits for when clicking around). This is
the server-side script time; the browser draws the Plotly charts after that.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sdcore.config import preset
from sdcore.training import train

ROOT = Path(__file__).resolve().parents[1]


def make_runs(root: Path) -> None:
    small = {"epochs": 3, "data.subset": 400}
    for alpha in (0.2, 0.5):
        for seed in range(4):
            train(preset("demo").replace(alpha=alpha, seed=seed, **small), runs_dir=root)
    for seed in range(2):
        train(preset("demo-byot").replace(seed=seed, **small), runs_dir=root)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_runs(Path(tmp))
        os.environ["SDLAB_RUNS_DIR"] = tmp
        from streamlit.testing.v1 import AppTest

        sys.path.insert(0, str(ROOT))  # the app package, as `streamlit run app/main.py` finds it
        from app import ui

        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300).run()
        rows = []
        for name, _, _ in ui.PAGE_SPECS:
            t0 = time.perf_counter()
            at.switch_page(f"../pages/{name}.py").run()
            first = time.perf_counter() - t0
            assert not at.exception, at.exception
            t0 = time.perf_counter()
            jobs = [h for h in ui.manager().jobs() if not h.done]
            for h in jobs:
                h.wait()
            background = time.perf_counter() - t0 if jobs else None
            t0 = time.perf_counter()
            at.run()
            ready = time.perf_counter() - t0
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t0)
            rows.append((name, first, len(jobs), background, ready, statistics.median(times)))
    print(f"### Page render with 10 finished runs ({time.strftime('%Y-%m-%d')}, 2 CPU cores)\n")
    print(f"`python benchmarks/bench_pages.py --repeats {args.repeats}`; Streamlit AppTest script time.\n")
    print("| page | first render (cold caches) | background jobs it queued | their time | render once done "
          "| later renders (median) |\n|---|---|---|---|---|---|")
    for name, first, n, background, ready, warm in rows:
        print(f"| {name} | {first:.2f} s | {n} | {'—' if background is None else f'{background:.1f} s'} "
              f"| {ready:.2f} s | {warm:.3f} s |")


if __name__ == "__main__":
    main()
