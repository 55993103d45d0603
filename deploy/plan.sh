# shellcheck shell=bash
# The launch plan shared by deploy/launch-ssh.sh and deploy/slurm/exgrpo.sbatch:
# which exgrpo process runs on which host with which arguments. Sourced, not
# run. Input: host records, one per line (the hosts file format):
#
#   HOST  ROLES  GPUS  [key=value ...]
#
# HOST is an ssh destination (user@name) or a Slurm node name; ROLES a
# comma-separated subset of nats,learner,replay,actor,verifier,inspect,trainer;
# GPUS the GPU count. Options: addr=ADDR (how other hosts reach this one;
# default HOST without user@), actors=N (CPU actors on a host without GPUs;
# default 1 when the host has the actor role and no GPUs), verifiers=N
# (verifier workers; default 1), engine=vllm|sglang (the host's actors drive
# an inference engine each: one engine per tp=N GPUs, default 1, with its
# actor beside it; without engine=, one built-in actor per GPU),
# trainer=N (on the learner host, or a host with the trainer role: torchrun
# runs the PyTorch worker over the host's first N GPUs; engines get the rest).
#
# Output: one line per process, fields separated by '|':
#
#   HOST|NAME|ENV|PROG|ARGS|READY
#
# NAME is unique per host (nats, learner, replay, inspect, trainer,
# engine-<g>, actor-<i>, verifier-<i>); ENV is "-" or space-separated
# VAR=value; PROG is "exgrpo" (the launcher's binary) or an engine's or
# torchrun's command; ARGS are words without spaces; READY is "-" or how to
# tell the process is ready, checked on its host: http:URL (answers 2xx) or
# sock:PATH (a socket exists). Processes come in start order, and a process
# starts only once every earlier one with a READY check passes it (the
# launchers start a run of same-kind processes together, then wait): NATS
# nodes, replay, inspect, verifiers, engines, actors, trainer workers, and
# the learner last.
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
#   engines and trainer workers: see deploy/gpu.sh

# shellcheck source=gpu.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu.sh"

exgrpo_plan_die() { echo "plan: $*" >&2; exit 2; }

# exgrpo_plan reads host records on stdin and prints the plan.
exgrpo_plan() {
  local run=${EXGRPO_RUN:-run} work=${EXGRPO_WORKDIR:-/tmp/exgrpo-${EXGRPO_RUN:-run}}
  local store=${EXGRPO_STORE:-$work/jetstream}
  local auth=${EXGRPO_AUTH:-} nport=${EXGRPO_NATS_PORT:-4222} cport=${EXGRPO_CLUSTER_PORT:-6222}
  local mport=${EXGRPO_MONITOR_PORT:-8222} mbase=${EXGRPO_METRICS_BASE:-9100} iport=${EXGRPO_INSPECT_PORT:-8080}
  local -a hosts=() roles=() gpus=() addrs=() nactors=() nverifiers=() engines=() tps=() trainers=()
  local line host r g opt n=0
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    read -r host r g opt <<<"$line" || true
    [[ -z ${host:-} ]] && continue
    [[ -n ${r:-} ]] || exgrpo_plan_die "host $host: no roles"
    [[ ${g:-0} =~ ^[0-9]+$ ]] || exgrpo_plan_die "host $host: GPU count '$g' is not a number"
    local a=${host#*@} na="" nv=1 kv eng="" tp=1 tr=0
    for kv in ${opt:-}; do
      case $kv in
        addr=*) a=${kv#addr=} ;;
        actors=*) na=${kv#actors=} ;;
        verifiers=*) nv=${kv#verifiers=} ;;
        engine=*) eng=${kv#engine=} ;;
        tp=*) tp=${kv#tp=} ;;
        trainer=*) tr=${kv#trainer=} ;;
        *) exgrpo_plan_die "host $host: unknown option '$kv' (addr=, actors=, verifiers=, engine=, tp=, trainer=)" ;;
      esac
    done
    local role
    for role in ${r//,/ }; do
      case $role in nats | learner | replay | actor | verifier | inspect | trainer) ;;
        *) exgrpo_plan_die "host $host: unknown role '$role' (nats, learner, replay, actor, verifier, inspect, trainer)" ;;
      esac
    done
    [[ $tp =~ ^[1-9][0-9]*$ ]] || exgrpo_plan_die "host $host: tp=$tp is not a positive number"
    [[ $tr =~ ^[0-9]+$ ]] || exgrpo_plan_die "host $host: trainer=$tr is not a number"
    ((tr <= ${g:-0})) || exgrpo_plan_die "host $host: trainer=$tr GPUs of ${g:-0}"
    if ((tr > 0)) && [[ ,$r, != *,learner,* && ,$r, != *,trainer,* ]]; then
      exgrpo_plan_die "host $host: trainer= needs the learner or trainer role"
    fi
    if [[ ,$r, == *,trainer,* ]] && ((tr == 0)); then exgrpo_plan_die "host $host: the trainer role needs trainer=N GPUs"; fi
    if [[ -n $eng ]]; then
      [[ $eng == vllm || $eng == sglang ]] || exgrpo_plan_die "host $host: engine=$eng (vllm or sglang)"
      [[ ,$r, == *,actor,* ]] || exgrpo_plan_die "host $host: engine= needs the actor role"
      (((${g:-0} - tr) > 0 && (${g:-0} - tr) % tp == 0)) ||
        exgrpo_plan_die "host $host: $((${g:-0} - tr)) GPUs for engines are not a positive multiple of tp=$tp"
      [[ -z $na ]] || exgrpo_plan_die "host $host: actors= and engine= together (engine actors are one per engine)"
      na=$(((${g:-0} - tr) / tp))
    fi
    if [[ -z $na ]]; then
      if [[ ,$r, == *,actor,* ]]; then
        if ((${g:-0} - tr > 0)); then na=$((${g:-0} - tr)); else na=1; fi
      else na=0; fi
    fi
    hosts[n]=$host roles[n]=,$r, gpus[n]=${g:-0} addrs[n]=$a nactors[n]=$na nverifiers[n]=$nv engines[n]=$eng tps[n]=$tp trainers[n]=$tr
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

  # emit NAME ENV PROG ARGS READY for host index $i.
  emit() { echo "${hosts[i]}|$1|$2|$3|$4|$5"; }
  # gpu_list FIRST COUNT: CUDA_VISIBLE_DEVICES for COUNT GPUs from FIRST.
  gpu_list() { local k out="" s=""; for ((k = $1; k < $1 + $2; k++)); do out+="$s$k"; s=,; done; echo "$out"; }

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
    emit nats - exgrpo "$args ${EXGRPO_SERVER_ARGS:-}" "http:http://127.0.0.1:$mport/healthz"
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,replay,* ]] &&
      emit replay - exgrpo "replay $common$(creds replay)$(metrics 1) ${EXGRPO_TRAIN_ARGS:-} ${EXGRPO_REPLAY_ARGS:-}" -
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,inspect,* ]] &&
      emit inspect - exgrpo "inspect serve --nats $url --run $run$(creds inspect) --http :$iport ${EXGRPO_INSPECT_ARGS:-}" -
  done
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,verifier,* ]] || continue
    for ((j = 0; j < nverifiers[i]; j++)); do
      emit "verifier-$j" - exgrpo "verifier $common$(creds verifier)$(metrics $((10 + j))) ${EXGRPO_VERIFIER_ARGS:-}" -
    done
  done
  # Engines, one per tp GPUs after the trainer's, each awaited before the actors.
  local spec prog eenv eargs port
  for ((i = 0; i < n; i++)); do
    [[ -n ${engines[i]} ]] || continue
    for ((j = 0; j < nactors[i]; j++)); do
      port=$(exgrpo_engine_port "$j")
      spec=$(exgrpo_engine "${engines[i]}" "$port" "${tps[i]}")
      IFS='|' read -r prog eenv eargs <<<"$spec"
      local cvd="CUDA_VISIBLE_DEVICES=$(gpu_list $((trainers[i] + j * tps[i])) "${tps[i]}")"
      if [[ $eenv == - ]]; then eenv=$cvd; else eenv="$eenv $cvd"; fi
      emit "engine-$j" "$eenv" "$prog" "$eargs" "http:$(exgrpo_engine_health "$port")"
    done
  done
  for ((i = 0; i < n; i++)); do
    for ((j = 0; j < nactors[i]; j++)); do
      local env=- extra=""
      if [[ -n ${engines[i]} ]]; then
        extra=" $(exgrpo_actor_engine_flags "${engines[i]}" "$(exgrpo_engine_port "$j")")"
      elif ((gpus[i] - trainers[i] > 0)); then
        env="CUDA_VISIBLE_DEVICES=$((trainers[i] + j % (gpus[i] - trainers[i])))"
      fi
      emit "actor-$j" "$env" exgrpo "actor $common$(creds actor)$(metrics $((30 + j))) --id ${addrs[i]}-a$j$extra ${EXGRPO_ACTOR_ARGS:-}" -
    done
  done
  # Trainer workers: torchrun on the learner host (rank 0, whose worker
  # listens on the socket the learner connects to) and on every trainer host.
  local learner_i=-1 nodes=0
  for ((i = 0; i < n; i++)); do
    [[ ${roles[i]} == *,learner,* ]] && learner_i=$i
    ((trainers[i] > 0)) && nodes=$((nodes + 1))
  done
  if ((nodes > 0)); then
    ((trainers[learner_i] > 0)) || exgrpo_plan_die "trainer hosts without a trainer on the learner host (give it trainer=N)"
    local rank=0 order=("$learner_i") tmodel
    # The checkpoint's weights when the learner resumes from one (gpu.sh).
    tmodel=$(exgrpo_trainer_model "$work/checkpoints")
    for ((i = 0; i < n; i++)); do ((i != learner_i && trainers[i] > 0)) && order+=("$i"); done
    for i in "${order[@]}"; do
      spec=$(exgrpo_trainer "$nodes" "$rank" "${trainers[i]}" "${addrs[learner_i]}" "$tmodel")
      IFS='|' read -r prog eenv eargs <<<"$spec"
      eenv="$eenv CUDA_VISIBLE_DEVICES=$(gpu_list 0 "${trainers[i]}")"
      local ready=-
      ((rank == 0)) && ready="sock:$(exgrpo_trainer_socket)"
      emit trainer "$eenv" "$prog" "$eargs" "$ready"
      rank=$((rank + 1))
    done
  fi
  # The learner last.
  i=$learner_i
  local lextra=""
  ((trainers[i] > 0)) && lextra=" $(exgrpo_learner_trainer_flags)"
  emit learner - exgrpo "learner $common$(creds learner)$(metrics 0) --checkpoint-dir $work/checkpoints --cache-dir $work/cache$lextra ${EXGRPO_TRAIN_ARGS:-} ${EXGRPO_LEARNER_ARGS:-}" -
}
