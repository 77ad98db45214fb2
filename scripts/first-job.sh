#!/usr/bin/env bash
# A first training job end to end from the command line: submit the example,
# follow its log to the end, show the finished job, download the trained model.
# With no DLAAS_TRAINER_URL set, `dlaas` starts the embedded Trainer on demand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

example=examples/first-job
id=$(dlaas train "$example/manifest.yml" "$example")
echo "Submitted $id; following its log."
dlaas logs "$id" --follow
dlaas show "$id"

mkdir -p downloads
model="downloads/$id-trainedmodel.zip"
dlaas download "$id" --trainedmodel --filename "$model"
echo "Trained model saved to $model:"
python -m zipfile -l "$model"
