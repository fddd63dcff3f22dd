import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, so a second thread does not fight the
# laptop's other programs for a core (BENCHMARKS.md, "Threads on a busy laptop"); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sdcore.cli import main

raise SystemExit(main())
