"""Offline routing work, over each tier's cached runs of a task set: nothing here serves requests.

- `runs.py`: each tier run alone over tasks, the per-task `TierRun`s, the teacher's reference actions;
- `calibrate.py`: routing simulated over those runs, and thresholds chosen from it (`distillery calibrate`);
- `certify.py`: thresholds with a finite-sample guarantee (Learn-then-Test);
- `evaluate.py`: the held-out comparison with the student, the teacher, a random router and the oracle
  (`distillery eval`); `results.py` writes and reads its results; `metrics.py` holds PGR, APGR, CPT, AUROC, ECE;
- `train_cascade.py`: each tier distilled from the one above it (`distillery cascade train`).

The run-time side (cascade, scorers, config, the escalation rule) is `distillery.routing`.
"""
