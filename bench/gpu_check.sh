#!/usr/bin/env bash
# The GPU box check (bench/gpu_check.py): run from the repository root on the lent machine,
# which has torch but no dvc, no ruamel.yaml and no network. Before the lease, on this
# machine, carry what it lacks in the ignored folder .gpu-deps/:
#   mkdir -p .gpu-deps && cp -r "$(python -c 'import ruamel, os; print(os.path.dirname(ruamel.__path__[0]))')"/ruamel .gpu-deps/
#   mkdir -p .gpu-deps/retino-before && git archive deac1b9 retino | tar -x -C .gpu-deps/retino-before
#     (optional: the code before the training step stopped waiting, for the syncs "before" figure)
# and pass carry=[".gpu-deps"] to the device tool. Writes bench/gpu_check.json as it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".:.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
exec python3 bench/gpu_check.py --out bench/gpu_check.json "$@"
