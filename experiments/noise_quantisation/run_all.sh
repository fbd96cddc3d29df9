#!/usr/bin/env bash
# Run the eight noise/quantisation studies, then collect them into docs/results.
#   experiments/noise_quantisation/run_all.sh                     # digits (the default study)
#   experiments/noise_quantisation/run_all.sh --dataset mnist --data-dir ../shared/datasets
# Extra arguments go to every `optdfa sweep` call (e.g. --workers 2). Each study is resumable:
# re-running skips the runs already in runs/noise_quantisation[-<dataset>]/<study>/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
OPTDFA=${OPTDFA:-.venv/bin/optdfa}
PYTHON=${PYTHON:-.venv/bin/python}
suffix=""
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--dataset" ]]; then j=$((i + 1)); suffix="-${!j}"; fi
done
runs="runs/noise_quantisation${suffix}"
start=$(date +%s)
for study in adc-bits read-noise photon-budget full-well ternary-threshold encoder reference-power medium-drift; do
  t=$(date +%s)
  "$OPTDFA" sweep "experiments/noise_quantisation/${study}.toml" --out "${runs}/${study}" --quiet "$@" || true
  echo "${study}: $(($(date +%s) - t)) s"
done
echo "all studies: $(($(date +%s) - start)) s"
if [[ -z "$suffix" ]]; then
  "$PYTHON" experiments/noise_quantisation/report.py --runs "$runs"
fi
