#!/usr/bin/env bash
# Starts and stops an exgrpo cluster over plain ssh, driven by a hosts file
# (format: deploy/hosts.example, parsed by deploy/plan.sh): the NATS cluster,
# one actor per GPU (CUDA_VISIBLE_DEVICES), verifier workers, the replay
# service and the learner. Every process runs detached in its own session on
# its host, logs to WORKDIR/logs/<name>.log and records its pid in
# WORKDIR/pids/<name>.pid; `stop` signals exactly those process groups.
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
mport=${EXGRPO_MONITOR_PORT:-8222}

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

# start_script HOST PHASE: the sh script that starts HOST's processes of
# PHASE (nats or roles), skipping any whose pid file names a live process.
start_script() {
  local host=$1 phase=$2 h name env args
  printf 'set -e\nW=%s\nmkdir -p "$W/logs" "$W/pids"\ncd "$W"\n' "$work"
  printf 'S=; command -v setsid >/dev/null 2>&1 && S=setsid\n'
  while IFS='|' read -r h name env args; do
    [[ $h == "$host" ]] || continue
    if [[ $phase == nats ]]; then [[ $name == nats ]] || continue; else [[ $name != nats ]] || continue; fi
    [[ $env == - ]] && env=
    cat <<SH
if [ -f pids/$name.pid ] && kill -0 "\$(cat pids/$name.pid)" 2>/dev/null; then
  echo "$host: $name already running (pid \$(cat pids/$name.pid))"
else
  \$S env $env $bin $args >>logs/$name.log 2>&1 </dev/null &
  echo \$! >pids/$name.pid
  echo "$host: started $name (pid \$!)"
fi
SH
  done <<<"$plan"
}

# stop_script PHASE: signals the process group of every pid file of PHASE
# (nats or roles) with TERM, waits up to 20 s, then KILLs what is left.
stop_script() {
  cat <<SH
W=$work
P=$1
[ -d "\$W/pids" ] || exit 0
cd "\$W/pids"
# mine NAME: whether NAME belongs to this phase (the NATS node, or the roles).
mine() { if [ "\$P" = nats ]; then [ "\$1" = nats ]; else [ "\$1" != nats ]; fi; }
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

# wait_nats_script: polls this host's NATS monitoring endpoint until healthy.
wait_nats_script() {
  cat <<SH
i=0
until $bin health --url http://127.0.0.1:$mport/healthz >/dev/null 2>&1; do
  i=\$((i + 1))
  [ \$i -gt 120 ] && { echo "\$(hostname): NATS not healthy after 60 s; see $work/logs/nats.log" >&2; exit 1; }
  sleep 0.5
done
SH
}

print_plan() {
  local h name env args
  while IFS='|' read -r h name env args; do
    # shellcheck disable=SC2086
    printf 'plan: host=%s name=%s env=%s cmd=%s %s\n' "$h" "$name" "$env" "$bin" "$(echo $args)"
  done <<<"$plan"
}

case $cmd in
  plan) print_plan ;;
  start)
    print_plan
    nats_hosts=$(awk -F'|' '$2 == "nats" { print $1 }' <<<"$plan")
    for h in $nats_hosts; do remote "$h" "$(start_script "$h" nats)"; done
    for h in $nats_hosts; do remote "$h" "$(wait_nats_script)"; done
    for h in "${plan_hosts[@]}"; do
      s=$(start_script "$h" roles)
      if grep -q 'started\|already' <<<"$s"; then remote "$h" "$s"; fi
    done
    if ((dry)); then echo "dry run: nothing was started"; fi
    ;;
  stop)
    # Roles everywhere first, then the NATS nodes, so that nothing loses its
    # server while it still has work in flight.
    for h in "${plan_hosts[@]}"; do remote "$h" "$(stop_script roles)"; done
    for h in "${plan_hosts[@]}"; do remote "$h" "$(stop_script nats)"; done
    ;;
  status)
    for h in "${plan_hosts[@]}"; do echo "== $h"; remote "$h" "$(status_script)"; done
    ;;
esac
