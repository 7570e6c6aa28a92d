#!/usr/bin/env bash
# GPU benchmarks of issue #17 in one prepared run, under 8 minutes on one H100/H200:
#   bench          CIFAR-10 preset, bf16, real training loop vs the plain fp32 DDPM loop (mstar bench),
#                  sampling seconds per network evaluation, peak memory          (limit 150 s)
#   rollout        CIFAR U-Net step (bf16, fp32) and the coupled roll-out (Beta, Gaussian;
#                  float64, float32) as a share of a training step               (limit 110 s)
#   bench-compile  the same bench with train.compile=true                        (limit 200 s)
# then a summary. Results: JSON lines in OUT/gpu.jsonl (emptied first), OUT/summary.txt, OUT/device.txt.
#
# Usage: bash benchmarks/gpu.sh [--out DIR] [--cpu] [--sections bench,rollout,bench-compile]
#                               [--limit SECTION=SECONDS] [--budget SECONDS] [gpu.py options...]
#   --out DIR      results folder (default benchmarks/results/gpu)
#   --cpu          smoke mode: every section at tiny sizes on the CPU (under a minute)
#   --limit S=N    time limit of section S in seconds (repeatable)
#   --budget N     seconds for all sections (default 455, so that the run, its summary and a section
#                  killed at its limit stay under 8 minutes); a section's limit shrinks to what is left
# Other options (--cifar-root, --bench-steps, --bench-repeats) go to benchmarks/gpu.py.
# Exit status: 0 when every section finished, 1 otherwise (the summary is printed either way). Needs bash 4+.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=""
cpu=0
sections="device,bench,rollout,bench-compile"
budget=455
declare -A limit=([device]=30 [bench]=150 [rollout]=110 [bench-compile]=200)
pass=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --cpu) cpu=1; pass+=(--cpu); shift ;;
    --sections) sections="device,$2"; shift 2 ;;
    --sections=*) sections="device,${1#--sections=}"; shift ;;
    --limit) limit[${2%%=*}]="${2#*=}"; shift 2 ;;
    --limit=*) kv="${1#--limit=}"; limit[${kv%%=*}]="${kv#*=}"; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --budget=*) budget="${1#--budget=}"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

case "$out" in
  "") out="$root/benchmarks/results/gpu" ;;
  /*) ;;
  *) out="$PWD/$out" ;;  # relative to where the script was called from
esac
cd "$root"
py="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ((cpu)); then  # one thread: steadier on a small shared machine
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
fi
mkdir -p "$out"
: > "$out/gpu.jsonl"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname 2>/dev/null || echo ?)" \
       " cpus: $(nproc --all 2>/dev/null || echo ?)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv || true
  else
    echo "nvidia-smi: not found"
  fi
} | tee "$out/device.txt"

start=$SECONDS
failed=0
IFS=',' read -r -a todo <<< "$sections"
for section in "${todo[@]}"; do
  [[ -n "$section" ]] || continue
  left=$((budget - (SECONDS - start) - 10))  # 10 s kept for the summary
  lim=${limit[$section]:-120}
  ((lim > left)) && lim=$left
  if ((lim < 5)); then
    echo "== $section: skipped, the run's budget of ${budget} s is spent"
    printf '{"section": "failure", "name": "%s", "status": "skipped", "limit_s": %d}\n' "$section" "$budget" \
      >> "$out/gpu.jsonl"
    failed=1
    continue
  fi
  echo "== $section (limit ${lim} s, $((SECONDS - start)) s elapsed)"
  t0=$SECONDS
  cmd=("$py" benchmarks/gpu.py "$section" --out "$out" --deadline "$lim" ${pass[@]+"${pass[@]}"})
  if command -v timeout >/dev/null 2>&1; then
    cmd=(timeout --kill-after=10 "$lim" "${cmd[@]}")
  fi
  if "${cmd[@]}"; then
    echo "== $section done in $((SECONDS - t0)) s"
  else
    rc=$?
    status=failed
    ((rc == 124 || rc == 137)) && status=timeout
    echo "== $section: $status (exit status $rc) after $((SECONDS - t0)) s" >&2
    printf '{"section": "failure", "name": "%s", "status": "%s", "rc": %d, "limit_s": %d, "seconds": %d}\n' \
      "$section" "$status" "$rc" "$lim" "$((SECONDS - t0))" >> "$out/gpu.jsonl"
    failed=1
  fi
done

echo "== summary ($((SECONDS - start)) s in all)"
"$py" benchmarks/gpu.py summary --out "$out" ${pass[@]+"${pass[@]}"} || failed=1
exit "$failed"
