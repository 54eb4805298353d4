#!/usr/bin/env bash
# Runs deploy/k8s/study.yaml phase by phase: applies the volume and config, then each Job, waiting
# for it to complete before the next (Kubernetes has no dependencies between Jobs).
#   deploy/k8s/run.sh [-n NAMESPACE]
# A failed index leaves its Job failed: fix the cause, then
#   kubectl delete job headscope-study-<phase> && deploy/k8s/run.sh
# starts the phase again; every shard skips the units already on the volume. Jobs that completed
# are kept (delete them to rerun a phase; `headscope study status --out DIR` shows per-shard progress).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=()
if [ "${1:-}" = "-n" ]; then ns=(-n "$2"); fi
kubectl "${ns[@]}" apply -f "$here/study.yaml" -l phase=volume
for phase in prepare detect ablate report; do
  job=headscope-study-$phase
  if kubectl "${ns[@]}" get job "$job" -o jsonpath='{.status.succeeded}' 2>/dev/null | grep -q .; then
    state=$(kubectl "${ns[@]}" get job "$job" -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')
    if [ "$state" = "True" ]; then echo "$job: already complete"; continue; fi
  fi
  kubectl "${ns[@]}" apply -f "$here/study.yaml" -l phase="$phase"
  echo "waiting for $job"
  while :; do
    conditions=$(kubectl "${ns[@]}" get job "$job" \
      -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')
    case " $conditions " in
      *" Complete "*) echo "$job: complete"; break ;;
      *" Failed "*) echo "$job failed: kubectl describe job $job; resume with the header's steps" >&2; exit 1 ;;
    esac
    sleep 15
  done
done
echo "done: the report is on the volume (summary.json, FINDINGS.md, figures/)"
