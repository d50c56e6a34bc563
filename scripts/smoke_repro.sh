#!/usr/bin/env bash
# `dvc repro` of the smoke profile in a temporary clone of HEAD, then the checks a published
# report must pass: the results table and every figure dvc.yaml declares exist and are
# non-empty, no published file names a path of this machine, the report's site passes the
# browser test (headless Chromium: every page loads, links and images resolve, no console
# error, no traceback, 15 MB at most), a second `dvc repro` reruns nothing, and the outputs,
# once committed, agree with dvc.lock.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
data=${MTLIB_DATA:-$root/../shared/data/cs224n}
[ -d "$data" ] || { echo "smoke_repro: no course data at $data (set MTLIB_DATA)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone --quiet "$root" "$tmp/repo"
mkdir -p "$tmp/repo/data"
cp -a "$root/data/nltk_data" "$tmp/repo/data/nltk_data"  # built by `make setup`; the notebooks import this clone's mtlib
cd "$tmp/repo"
sed -i 's/^profile: .*/profile: smoke/' params.yaml
export MTLIB_DATA=$(cd "$data" && pwd) DVC_NO_ANALYTICS=1
start=$(date +%s)
dvc repro
echo "smoke dvc repro: $(( $(date +%s) - start )) s"
python -m mtlib.study.pipeline check-outputs
python -m mtlib.study.site_check reports/html
dvc repro | tee "$tmp/second.log"
if grep -q "Running stage" "$tmp/second.log"; then
  echo "smoke_repro: a second dvc repro reran stages" >&2
  exit 1
fi
git add -A
git -c user.name=smoke -c user.email=smoke@localhost commit --quiet -m "smoke run"
python -m mtlib.study.pipeline check-lock
echo "published outputs: $(du -shc results/table.csv results/table.md figures reports/index.html reports/html | tail -1)"
