#!/usr/bin/env bash
# A sharded study on a real single-node Slurm, compared with the unsharded run of the same
# configuration (issue: studies past one machine). It
#   1. installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing;
#   2. writes a minimal slurm.conf (one `localhost` node, proctrack/linuxproc, task/none,
#      SlurmUser=root, state in a temporary folder) and starts munged, slurmctld and slurmd itself
#      (no systemd), stopping exactly those processes by pid at the end, also on failure;
#   3. runs the study unsharded, then through deploy/slurm/submit.sh as 4-task arrays
#      (prepare → detect → ablate → report, `sbatch --wait`), and requires identical summary.json,
#      FINDINGS.md, figures and unit files;
#   4. kills one detect task in the middle of its units with `scancel --signal=KILL`, checks that
#      the report refuses and names the shard, resubmits that index alone, finishes the study and
#      compares again.
# Needs root (or sudo) for the packages and the daemons. Uses the tiny fixture model and
# tests/fixtures/study/tiny.jsonl, so it takes a minute or two, most of it Slurm's scheduling.
#   HEADSCOPE=path/to/headscope   the binary (default: target/debug/headscope, built if missing)
#   KEEP=1                        keep the temporary folder (daemon logs, study folders)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "slurm-study-test: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else
  fail "needs root or sudo (Slurm's daemons run as root)"
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
  || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null; }
fi

bin=${HEADSCOPE:-$root/target/debug/headscope}
if [ ! -x "$bin" ]; then cargo build --locked --quiet; fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export HEADSCOPE=$bin

tmp=$(mktemp -d /tmp/headscope-slurm.XXXXXX)
chmod 755 "$tmp"
cleanup() {
  local code=$?
  for d in slurmd slurmctld munged; do
    if [ -s "$tmp/$d.pid" ]; then $SUDO kill "$(cat "$tmp/$d.pid")" 2>/dev/null || true; fi
  done
  sleep 1
  for d in slurmd slurmctld munged; do
    if [ -s "$tmp/$d.pid" ]; then $SUDO kill -9 "$(cat "$tmp/$d.pid")" 2>/dev/null || true; fi
  done
  if [ "$code" -ne 0 ]; then
    for log in slurmctld slurmd; do [ -f "$tmp/$log.log" ] && tail -n 20 "$tmp/$log.log" >&2; done
    for f in "$tmp"/*/logs/*.out; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done
  fi
  if [ -z "${KEEP:-}" ]; then $SUDO rm -rf "$tmp"; else say "kept $tmp"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports for this cluster, so that another Slurm on the machine is left alone.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)); }
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$tmp/state" "$tmp/spool"
cat >"$tmp/slurm.conf" <<CONF
ClusterName=headscope-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(port)
SlurmdPort=$(port)
AuthType=auth/munge
AuthInfo=socket=$tmp/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$tmp/slurm.conf
$SUDO munged --force --socket="$tmp/munge.socket" --pid-file="$tmp/munged.pid" \
  --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed"
$SUDO env SLURM_CONF="$SLURM_CONF" slurmctld -f "$SLURM_CONF"
$SUDO env SLURM_CONF="$SLURM_CONF" slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then break; fi
  sleep 1
done
sinfo -h -o %T | grep -q idle || fail "the node did not come up"
say "Slurm is up ($cpus CPUs, $(sinfo -h -o %P))"

# The fixture model with room for the prompts, and the study's settings.
model=$tmp/model
mkdir -p "$model"
cp tests/fixtures/llama/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,generation_config.json} "$model/"
sed -i 's/"max_position_embeddings": [0-9]*/"max_position_embeddings": 2048/' "$model/config.json"
data=$root/tests/fixtures/study/tiny.jsonl
flags=(--model "$model" --ks 0,1,2 --draws 2 --top-n 4 --max-new-tokens 3 --bootstrap 100 --batch 3
  --methods summed-attention,retrieval,qrhead)

# One CPU and a little memory per task, whatever the template asks of a real cluster.
small=(--cpus-per-task=1 --mem=512M)

compare() { # the study in $1 against the unsharded one
  local f
  for f in summary.json FINDINGS.md; do
    cmp -s "$tmp/whole/$f" "$1/$f" || fail "$f of $1 differs from the unsharded run's"
  done
  diff -r -q "$tmp/whole/figures" "$1/figures" >/dev/null || fail "the figures of $1 differ"
  diff -r -q -x logs -x shards.toml -x '.*.tmp' -x FINDINGS.md -x summary.json -x figures \
    "$tmp/whole" "$1" >/dev/null || fail "the unit files of $1 differ"
}

say "unsharded run"
"$bin" study run "$data" --out "$tmp/whole" "${flags[@]}" >"$tmp/whole.log" 2>&1 || { cat "$tmp/whole.log" >&2; fail "the unsharded run"; }

say "sharded run: 4 shards, at most 2 at once"
t0=$(date +%s)
deploy/slurm/submit.sh --out "$tmp/sharded" --shards 4 --throttle 2 --wait --sbatch "${small[*]}" -- "$data" "${flags[@]}" >&2 \
  || fail "the sharded chain"
compare "$tmp/sharded"
say "sharded run equals the unsharded one ($(( $(date +%s) - t0 )) s)"

say "a detect task killed mid-run, then resubmitted"
fault=$tmp/fault
"$bin" study prepare "$data" --out "$fault" --shard-count 4 "${flags[@]}" >/dev/null
mkdir -p "$fault/logs"
# Two seconds per unit: shard 1's seven detection units take long enough to be killed in between.
job=$(HEADSCOPE_STUDY_UNIT_DELAY_MS=2000 sbatch --parsable "${small[@]}" --array=0-3 --output="$fault/logs/detect-%A_%a.out" \
  deploy/slurm/study.sbatch detect "$fault")
for _ in $(seq 120); do
  done_units=$("$bin" study status --out "$fault" | awk '/shard 1 / {for (i=1;i<=NF;i++) if ($i=="1" && $(i-1)=="shard") print $(i+1)}' | head -n1)
  if [ -n "$done_units" ] && [ "${done_units%%/*}" -ge 1 ]; then break; fi
  sleep 1
done
[ -n "$done_units" ] && [ "${done_units%%/*}" -ge 1 ] || fail "shard 1 never started"
scancel --signal=KILL --full "${job}_1"
for _ in $(seq 120); do [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break; sleep 1; done
left=$("$bin" study status --out "$fault" | awk '/shard 1 / {for (i=1;i<=NF;i++) if ($i=="1" && $(i-1)=="shard") print $(i+1)}' | head -n1)
say "shard 1 was killed with $left detection units done"
if "$bin" study report --out "$fault" 2>"$tmp/refused.log"; then fail "the report ran with shard 1 unfinished"; fi
grep -q "in shards 1 " "$tmp/refused.log" || { cat "$tmp/refused.log" >&2; fail "the report did not name shard 1"; }
sbatch --wait "${small[@]}" --array=1 --output="$fault/logs/detect-again-%A_%a.out" deploy/slurm/study.sbatch detect "$fault" >/dev/null \
  || fail "the resubmitted detect task"
sbatch --wait "${small[@]}" --array=0-3 --output="$fault/logs/ablate-%A_%a.out" deploy/slurm/study.sbatch ablate "$fault" >/dev/null \
  || fail "the ablate array"
"$bin" study report --out "$fault" >/dev/null 2>&1 || fail "the report after the resubmission"
compare "$fault"
say "ok: sharded results equal the unsharded ones, also after a killed and resubmitted task"
