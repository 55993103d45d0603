#!/usr/bin/env bash
# Starts and stops an exgrpo cluster over plain ssh, driven by a hosts file
# (format: deploy/hosts.example, parsed by deploy/plan.sh): the NATS cluster,
# the replay service, verifier workers, an inference engine per GPU or
# tensor-parallel group with an actor beside each (or one built-in actor per
# GPU), the PyTorch trainer workers under torchrun, and the learner last.
# Each kind of process starts once the ones before it are ready (NATS
# healthy, engines answering /health, the trainer's socket listening).
# Every process runs detached in its own session on its host, logs to
# WORKDIR/logs/<name>.log and records its pid in WORKDIR/pids/<name>.pid;
# `stop` signals exactly those process groups: the learner and the trainer
# first, then the actors, then engines, verifiers and replay, the NATS nodes
# last. `start` skips what is running, so run again it restarts what died;
# while the learner is not running it also restarts the torchrun workers,
# on the latest checkpoint's weights when the learner resumes (gpu.sh).
#
#   deploy/launch-ssh.sh [flags] start|stop|status|plan
#
# Flags:
#   -H, --hosts FILE    hosts file (default deploy/hosts)
#   --run ID            run id (default "run")
#   --workdir DIR       per-host directory (default /tmp/exgrpo-<run>)
#   --bin PATH          exgrpo binary on the hosts (default "exgrpo" on PATH)
#   --auth DIR          `exgrpo auth init` output, at this path on every host
#   --ssh CMD           ssh command (default "ssh -o BatchMode=yes"); e.g.
#                       "ssh -p 2222 -i ~/.ssh/exgrpo -o StrictHostKeyChecking=accept-new"
#   --nats-port N / --cluster-port N / --monitor-port N / --metrics-base N / --inspect-port N
#   --train "FLAGS"     training flags for learner and replay (e.g. "--steps 200 --k 8")
#   --model DIR         the HF model directory engines and the trainer load (EXGRPO_MODEL)
#   --ready-timeout S   how long a process may take to become ready (default 900)
#   --dry-run           print the plan and the commands, touch nothing
# Environment: EXGRPO_<ROLE>_ARGS adds flags per role (SERVER, LEARNER,
# REPLAY, ACTOR, VERIFIER, INSPECT); see deploy/plan.sh.
#
# Arguments and paths must not contain spaces (the plan is word-split).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=plan.sh
source "$here/plan.sh"

hosts_file=$here/hosts
bin=exgrpo
ssh_cmd=${EXGRPO_SSH:-ssh -o BatchMode=yes}
dry=0
cmd=
ready_timeout=900
die() { echo "launch-ssh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    -H | --hosts) hosts_file=$2; shift ;;
    --run) export EXGRPO_RUN=$2; shift ;;
    --workdir) export EXGRPO_WORKDIR=$2; shift ;;
    --bin) bin=$2; shift ;;
    --auth) export EXGRPO_AUTH=$2; shift ;;
    --ssh) ssh_cmd=$2; shift ;;
    --nats-port) export EXGRPO_NATS_PORT=$2; shift ;;
    --cluster-port) export EXGRPO_CLUSTER_PORT=$2; shift ;;
    --monitor-port) export EXGRPO_MONITOR_PORT=$2; shift ;;
    --metrics-base) export EXGRPO_METRICS_BASE=$2; shift ;;
    --inspect-port) export EXGRPO_INSPECT_PORT=$2; shift ;;
    --train) export EXGRPO_TRAIN_ARGS=$2; shift ;;
    --model) export EXGRPO_MODEL=$2; shift ;;
    --ready-timeout) ready_timeout=$2; shift ;;
    --dry-run) dry=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    start | stop | status | plan) cmd=$1 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done
[[ -n $cmd ]] || die "say start, stop, status or plan (try --help)"
[[ -r $hosts_file ]] || die "hosts file $hosts_file not readable (copy deploy/hosts.example)"
: "${EXGRPO_RUN:=run}"
: "${EXGRPO_WORKDIR:=/tmp/exgrpo-$EXGRPO_RUN}"
export EXGRPO_RUN EXGRPO_WORKDIR
work=$EXGRPO_WORKDIR

plan=$(exgrpo_plan <"$hosts_file")
mapfile -t plan_hosts < <(cut -d'|' -f1 <<<"$plan" | awk '!seen[$0]++')

# remote HOST SCRIPT: runs a POSIX sh script on HOST (script on stdin).
remote() {
  if ((dry)); then
    printf '%s\n' "--- $ssh_cmd $1 sh -s <<'EOF'" "$2" "EOF"
    return 0
  fi
  # shellcheck disable=SC2086
  $ssh_cmd "$1" sh -s <<<"$2"
}

# start_script HOST RECORDS: the sh script that starts HOST's processes
# among RECORDS (plan lines), skipping any whose pid file names a live
# process.
start_script() {
  local host=$1 h name env prog args ready
  printf 'set -e\nW=%s\nmkdir -p "$W/logs" "$W/pids"\ncd "$W"\n' "$work"
  printf 'S=; command -v setsid >/dev/null 2>&1 && S=setsid\n'
  while IFS='|' read -r h name env prog args ready; do
    [[ $h == "$host" ]] || continue
    [[ $env == - ]] && env=
    [[ $prog == exgrpo ]] && prog=$bin
    cat <<SH
if [ -f pids/$name.pid ] && kill -0 "\$(cat pids/$name.pid)" 2>/dev/null; then
  echo "$host: $name already running (pid \$(cat pids/$name.pid))"
else
  \$S env $env $prog $args >>logs/$name.log 2>&1 </dev/null &
  echo \$! >pids/$name.pid
  echo "$host: started $name (pid \$!)"
fi
SH
  done <<<"$2"
}

# stop_script PHASE: signals the process group of every pid file of PHASE
# (first: the learner and the trainer; actors; rest: engines, verifiers,
# replay, inspect; nats) with TERM, waits up to 20 s, then KILLs what is
# left.
stop_script() {
  cat <<SH
W=$work
P=$1
[ -d "\$W/pids" ] || exit 0
cd "\$W/pids"
# mine NAME: whether NAME belongs to this phase.
mine() {
  case "\$P:\$1" in
    first:learner | first:trainer | actors:actor-* | nats:nats) return 0 ;;
    rest:learner | rest:trainer | rest:actor-* | rest:nats) return 1 ;;
    rest:*) return 0 ;;
  esac
  return 1
}
for f in *.pid; do
  [ -f "\$f" ] && mine "\${f%.pid}" || continue
  p=\$(cat "\$f")
  kill -TERM -- -"\$p" 2>/dev/null || kill -TERM "\$p" 2>/dev/null || true
done
i=0
while [ \$i -lt 40 ]; do
  alive=0
  for f in *.pid; do
    [ -f "\$f" ] && mine "\${f%.pid}" || continue
    p=\$(cat "\$f")
    if kill -0 -- -"\$p" 2>/dev/null || kill -0 "\$p" 2>/dev/null; then alive=1; else rm -f "\$f"; echo "\$(hostname): stopped \${f%.pid}"; fi
  done
  [ \$alive = 0 ] && exit 0
  sleep 0.5; i=\$((i + 1))
done
for f in *.pid; do
  [ -f "\$f" ] && mine "\${f%.pid}" || continue
  p=\$(cat "\$f")
  kill -KILL -- -"\$p" 2>/dev/null || kill -KILL "\$p" 2>/dev/null || true
  rm -f "\$f"; echo "\$(hostname): killed \${f%.pid}"
done
SH
}

status_script() {
  cat <<SH
W=$work
[ -d "\$W/pids" ] || { echo "no processes"; exit 0; }
for f in "\$W"/pids/*.pid; do
  [ -f "\$f" ] || continue
  n=\$(basename "\$f" .pid); p=\$(cat "\$f")
  if kill -0 "\$p" 2>/dev/null; then echo "\$n running pid \$p log \$W/logs/\$n.log"; else echo "\$n exited (pid \$p) log \$W/logs/\$n.log"; fi
done
SH
}

# ready_script NAME CHECK: polls this host until process NAME passes CHECK
# (http:URL answers 2xx, sock:PATH exists), failing early when NAME exited
# and after the ready timeout.
ready_script() {
  local probe
  case $2 in
    http:*) probe="$bin health --url ${2#http:} >/dev/null 2>&1" ;;
    sock:*) probe="[ -S ${2#sock:} ]" ;;
    *) die "unknown readiness check '$2'" ;;
  esac
  cat <<SH
W=$work
i=0
until $probe; do
  if [ -f "\$W/pids/$1.pid" ] && ! kill -0 "\$(cat "\$W/pids/$1.pid")" 2>/dev/null; then
    echo "\$(hostname): $1 exited before it was ready; see \$W/logs/$1.log" >&2; exit 1
  fi
  i=\$((i + 1))
  [ \$i -gt $((ready_timeout * 2)) ] && { echo "\$(hostname): $1 not ready after ${ready_timeout} s ($2); see \$W/logs/$1.log" >&2; exit 1; }
  sleep 0.5
done
echo "\$(hostname): $1 ready"
SH
}

# A resuming learner needs its torchrun workers on the weights of the
# checkpoint its checkpoint directory's latest file names (gpu.sh
# exgrpo_trainer_model): for start and plan, that file is read on the
# learner's host, and the plan made again.
learner_host=$(awk -F'|' '$2 == "learner" { print $1 }' <<<"$plan")
has_trainer=0
grep -q '^[^|]*|trainer|' <<<"$plan" && has_trainer=1
if ((!dry && has_trainer)) && [[ $cmd == start || $cmd == plan ]]; then
  EXGRPO_CHECKPOINT_LATEST=$(remote "$learner_host" "$(printf 'cat "%s/checkpoints/latest" 2>/dev/null || true\n' "$work")")
  export EXGRPO_CHECKPOINT_LATEST
  plan=$(exgrpo_plan <"$hosts_file")
elif ((dry && has_trainer)); then
  export EXGRPO_CHECKPOINT_LATEST= # not read: the trainer's model shown is the plan's
  echo "dry run: start reads $work/checkpoints/latest on $learner_host; a resuming learner's torchrun starts on that checkpoint's weights"
fi

# learner_running: whether the learner's pid file names a live process.
learner_running() {
  remote "$learner_host" "$(printf 'p="%s/pids/learner.pid"\n[ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null\n' "$work")"
}

print_plan() {
  local h name env prog args ready
  while IFS='|' read -r h name env prog args ready; do
    [[ $prog == exgrpo ]] && prog=$bin
    # shellcheck disable=SC2086
    printf 'plan: host=%s name=%s env=%s ready=%s cmd=%s %s\n' "$h" "$name" "${env// /;}" "$ready" "$prog" "$(echo $args)"
  done <<<"$plan"
}

# start_all: the plan in order, a run of same-kind processes at a time
# (one ssh per host), each run started only once every earlier process
# with a readiness check passed it.
start_all() {
  local h name env prog args ready kind prev="" batch="" host
  local -a pending=()
  flush() {
    [[ -n $batch ]] || return 0
    for host in $(cut -d'|' -f1 <<<"$batch" | awk '!seen[$0]++'); do remote "$host" "$(start_script "$host" "$batch")"; done
    batch=""
  }
  while IFS='|' read -r h name env prog args ready; do
    kind=${name%%-*}
    if [[ $kind != "$prev" ]]; then
      flush
      local p
      for p in "${pending[@]}"; do remote "${p%%|*}" "$(ready_script "$(cut -d'|' -f2 <<<"$p")" "${p#*|*|}")"; done
      pending=()
      prev=$kind
    fi
    batch+="$h|$name|$env|$prog|$args|$ready"$'\n'
    [[ $ready == - ]] || pending+=("$h|$name|$ready")
  done <<<"$plan"
  flush
}

case $cmd in
  plan) print_plan ;;
  start)
    print_plan
    # A worker outlives its learner only holding the dead learner's
    # weights: a learner started again gets fresh workers (on the
    # checkpoint's weights when it resumes).
    if ((!dry && has_trainer)) && ! learner_running; then
      for h in "${plan_hosts[@]}"; do remote "$h" "$(stop_script first)"; done
    fi
    start_all
    if ((dry)); then echo "dry run: nothing was started"; fi
    ;;
  stop)
    # The learner and its trainer first (nothing new is asked for), then
    # the actors, then what served them, the NATS nodes last.
    for phase in first actors rest nats; do
      for h in "${plan_hosts[@]}"; do remote "$h" "$(stop_script "$phase")"; done
    done
    ;;
  status)
    for h in "${plan_hosts[@]}"; do echo "== $h"; remote "$h" "$(status_script)"; done
    ;;
esac
