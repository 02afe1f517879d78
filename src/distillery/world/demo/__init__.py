"""`distillery demo`: the whole pipeline end to end, on real (small) models, in a few minutes.

    from distillery.world.demo import DemoSettings, run_demo
    results = run_demo(DemoSettings(out="distillery-demo"))        # or DemoSettings.quick_settings(...)

Seven stages, each one call into the public API of the stage that owns it (nothing is
re-implemented here): collect, build, init (the student pruned from the teacher), train,
calibrate, queries, evaluate. The modules:

- `settings.py`  `DemoSettings`: every default in one place;
- `queries.py`   the hand-written queries (`queries.json`) and the world split samples;
- `stages.py`    the seven stage functions and what each one's cache key depends on;
- `context.py`   what the stages share: paths, models, one sealed toolbox per split, runners;
- `cache.py`     the per-stage done-markers (hash of the inputs) and the cached runs;
- `console.py`   what is printed: a report per stage, the summary table, where to go next;
- `run.py`       the driver, `results.json` and the HTML report.

Each stage writes `stages/<name>.json` with the hash of its inputs (settings, upstream stage
hashes, the teacher's weights); a re-run skips every stage whose hash still matches, and a
collection that was interrupted resumes from the store. Every number printed comes from this run.
"""

from distillery.world.demo.cache import Stages, fingerprint, read_trajectories, write_trajectories
from distillery.world.demo.queries import demo_queries, demo_tasks, world_split
from distillery.world.demo.run import RESULTS_KIND, Demo, quiet_library_output, run_demo
from distillery.world.demo.settings import PRUNED, DemoSettings
from distillery.world.demo.stages import torch_threads

__all__ = [
    "PRUNED", "RESULTS_KIND", "Demo", "DemoSettings", "Stages", "demo_queries", "demo_tasks", "fingerprint",
    "quiet_library_output", "read_trajectories", "run_demo", "torch_threads", "world_split", "write_trajectories",
]
