"""retino: grade diabetic retinopathy (0-4) from fundus photographs with ResNet-18/50.

The folders follow the stage graph (see ARCHITECTURE.md)::

    retino/data/    synthesize, downscale-images, compute-stats
    retino/train/   train@<arch>-<init>
    retino/report/  evaluate@<arch>-<init>, compare
    retino/lab.py   the lab-compatible face: RetinopathyLoader, ResNet18/50, evaluate

and below all of them the shared basics: ``params`` (params.yaml, typed and
validated), ``errors`` (the user-facing exceptions), ``grading`` (the five grades
and how a grading is scored), ``atomic`` (crash-safe writes), ``pool`` (ordered
process pool), ``progress`` (rich bars and tables), ``stage`` (how a stage script
runs and ends) and ``imports`` (which modules a script runs).
"""
