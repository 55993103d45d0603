# shellcheck shell=bash
# The launch plan shared by deploy/launch-ssh.sh and deploy/slurm/exgrpo.sbatch:
# which exgrpo process runs on which host with which arguments. Sourced, not
# run. Input: host records, one per line (the hosts file format):
#
#   HOST  ROLES  GPUS  [key=value ...]
#
# HOST is an ssh destination (user@name) or a Slurm node name; ROLES a
# comma-separated subset of nats,learner,replay,actor,verifier,inspect; GPUS
# the GPU count (one actor per GPU with CUDA_VISIBLE_DEVICES). Options:
# addr=ADDR (how other hosts reach this one; default HOST without user@),
# actors=N (CPU actors on a host without GPUs; default 1 when the host has the
# actor role and no GPUs), verifiers=N (verifier workers; default 1).
#
# Output: one line per process, fields separated by '|':
#
#   HOST|NAME|ENV|ARGS
#
# NAME is unique per host (nats, learner, replay, inspect, actor-<i>,
# verifier-<i>); ENV is "-" or space-separated VAR=value; ARGS are the
# exgrpo arguments (words without spaces). Processes come in start order:
# NATS nodes first, then replay, learner, inspect, verifiers, actors.
#
# Settings (environment, set by the callers' flags):
#   EXGRPO_RUN       run id (default "run")
#   EXGRPO_WORKDIR   per-host directory for logs, pids, JetStream, checkpoints
#   EXGRPO_STORE     JetStream store directory of a NATS node (default
#                    $EXGRPO_WORKDIR/jetstream; must be node-local)
#   EXGRPO_AUTH      directory with server.conf and <role>.creds on every host
#                    (from `exgrpo auth init`); empty = no auth
#   EXGRPO_NATS_PORT / EXGRPO_CLUSTER_PORT / EXGRPO_MONITOR_PORT  (4222/6222/8222)
#   EXGRPO_METRICS_BASE  first metrics port on a host (default 9100; 0 = off)
#   EXGRPO_INSPECT_PORT  inspect web page port (default 8080)
#   EXGRPO_TRAIN_ARGS    training flags for learner and replay (e.g. "--steps 200 --k 8")
#   EXGRPO_<ROLE>_ARGS   extra flags per role: SERVER, LEARNER, REPLAY, ACTOR, VERIFIER, INSPECT

exgrpo_plan_die() { echo "plan: $*" >&2; exit 2; }

# exgrpo_plan reads host records on stdin and prints the plan.
exgrpo_plan() {
  local run=${EXGRPO_RUN:-run} work=${EXGRPO_WORKDIR:-/tmp/exgrpo-${EXGRPO_RUN:-run}}
  local store=${EXGRPO_STORE:-$work/jetstream}
  local auth=${EXGRPO_AUTH:-} nport=${EXGRPO_NATS_PORT:-4222} cport=${EXGRPO_CLUSTER_PORT:-6222}
  local mport=${EXGRPO_MONITOR_PORT:-8222} mbase=${EXGRPO_METRICS_BASE:-9100} iport=${EXGRPO_INSPECT_PORT:-8080}
  local -a hosts=() roles=() gpus=() addrs=() nactors=() nverifiers=()
  local line host r g opt n=0
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    read -r host r g opt <<<"$line" || true
    [[ -z ${host:-} ]] && continue
    [[ -n ${r:-} ]] || exgrpo_plan_die "host $host: no roles"
    [[ ${g:-0} =~ ^[0-9]+$ ]] || exgrpo_plan_die "host $host: GPU count '$g' is not a number"
    local a=${host#*@} na="" nv=1 kv
    for kv in ${opt:-}; do
      case $kv in
        addr=*) a=${kv#addr=} ;;
        actors=*) na=${kv#actors=} ;;
        verifiers=*) nv=${kv#verifiers=} ;;
        *) exgrpo_plan_die "host $host: unknown option '$kv' (addr=, actors=, verifiers=)" ;;
      esac
    done
    local role
    for role in ${r//,/ }; do
      case $role in nats | learner | replay | actor | verifier | inspect) ;;
        *) exgrpo_plan_die "host $host: unknown role '$role' (nats, learner, replay, actor, verifier, inspect)" ;;
      esac
    done
    if [[ -z $na ]]; then
      if [[ ,$r, == *,actor,* ]]; then
        if ((${g:-0} > 0)); then na=$g; else na=1; fi
      else na=0; fi
    fi
    hosts[n]=$host roles[n]=,$r, gpus[n]=${g:-0} addrs[n]=$a nactors[n]=$na nverifiers[n]=$nv
    n=$((n + 1))
  done
  ((n > 0)) || exgrpo_plan_die "no hosts"

  # The NATS cluster: every host with the nats role.
  local -a nats=()
  local i j
  for ((i = 0; i < n; i++)); do [[ ${roles[i]} == *,nats,* ]] && nats+=("$i"); done
  ((${#nats[@]} > 0)) || exgrpo_plan_die "no host has the nats role"
  local count=0
  for role in learner replay; do
    count=0
    for ((i = 0; i < n; i++)); do [[ ${roles[i]} == *,$role,* ]] && count=$((count + 1)); done
    ((count == 1)) || exgrpo_plan_die "exactly one host must have the $role role (found $count)"
  done
  local replicas=1
  ((${#nats[@]} >= 3)) && replicas=3
  local url="" sep=""
  for i in "${nats[@]}"; do url+="${sep}nats://${addrs[i]}:$nport"; sep=,; done

  creds() { [[ -n $auth ]] && printf ' --creds %s/%s.creds' "$auth" "$1"; }
  metrics() { # metrics <offset>
    ((mbase > 0)) && printf ' --metrics :%d' $((mbase + $1))
  }
  local common="--nats $url --run $run --replicas $replicas"

  # NATS nodes.
  for i in "${nats[@]}"; do
    local args="server --host 0.0.0.0 --port $nport --http-port $mport --store $store --name nats-$i"
    [[ -n $auth ]] && args+=" --config $auth/server.conf"
    if ((${#nats[@]} > 1)); then
      local routes="" rs=""
      for j in "${nats[@]}"; do
        ((j == i)) && continue
        routes+="${rs}nats-route://${addrs[j]}:$cport"; rs=,
      done
      args+=" --cluster-name exgrpo-$run --cluster-port $cport --routes $routes"
    fi
    echo "${hosts[i]}|nats|-|$args ${EXGRPO_SERVER_ARGS:-}"
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,replay,* ]] &&
      echo "${hosts[i]}|replay|-|replay $common$(creds replay)$(metrics 1) ${EXGRPO_TRAIN_ARGS:-} ${EXGRPO_REPLAY_ARGS:-}"
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,learner,* ]] &&
      echo "${hosts[i]}|learner|-|learner $common$(creds learner)$(metrics 0) --checkpoint-dir $work/checkpoints --cache-dir $work/cache ${EXGRPO_TRAIN_ARGS:-} ${EXGRPO_LEARNER_ARGS:-}"
    [[ ${roles[i]} == *,inspect,* ]] &&
      echo "${hosts[i]}|inspect|-|inspect serve --nats $url --run $run$(creds inspect) --http :$iport ${EXGRPO_INSPECT_ARGS:-}"
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,verifier,* ]] || continue
    for ((j = 0; j < nverifiers[i]; j++)); do
      echo "${hosts[i]}|verifier-$j|-|verifier $common$(creds verifier)$(metrics $((10 + j))) ${EXGRPO_VERIFIER_ARGS:-}"
    done
  done
  for ((i = 0; i < n; i++)); do
    for ((j = 0; j < nactors[i]; j++)); do
      local env=-
      ((gpus[i] > 0)) && env="CUDA_VISIBLE_DEVICES=$((j % gpus[i]))"
      echo "${hosts[i]}|actor-$j|$env|actor $common$(creds actor)$(metrics $((30 + j))) --id ${addrs[i]}-a$j ${EXGRPO_ACTOR_ARGS:-}"
    done
  done
}
