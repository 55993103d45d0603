# shellcheck shell=bash
# The command lines of the GPU processes deploy/plan.sh lays out, in one
# place: the inference engines (vLLM, SGLang), the PyTorch trainer workers
# (torchrun) and the exgrpo flags that connect actors and the learner to
# them. Sourced by plan.sh. Adjust here when an engine or the worker
# changes its flags; every launcher follows.
#
# Settings (environment):
#   EXGRPO_MODEL            the HF model directory (the base policy), a path every node reads
#   EXGRPO_MAX_MODEL_LEN    engine context: prompt + response tokens (default 9216: 1024 + 8192)
#   EXGRPO_MAX_LOGPROBS     top log-probs an engine may return (default 20)
#   EXGRPO_GPU_MEMORY       vLLM --gpu-memory-utilization / SGLang --mem-fraction-static (default 0.85)
#   EXGRPO_ENGINE_PORT      first engine port on a host (default 8000; engine g listens on +g)
#   EXGRPO_VLLM             vLLM's command (default "vllm")
#   EXGRPO_SGLANG_PYTHON    the Python that has sglang (default "python3")
#   EXGRPO_TORCHRUN         torchrun's command (default "torchrun")
#   EXGRPO_TRAINER_DIR      where the worker's Python package lives (default <repository>/trainer/torch)
#   EXGRPO_TRAINER_PORT     torchrun rendezvous port on the learner host (default 29500)
#   EXGRPO_TRAINER_SOCKET   the worker's socket (default /tmp/exgrpo-<run>-trainer.sock, node-local)
#   EXGRPO_MICRO_BATCH_TOKENS  the worker's token budget per forward with gradient (default 16384)
#   EXGRPO_VLLM_ARGS / EXGRPO_SGLANG_ARGS / EXGRPO_TORCHWORKER_ARGS  extra flags
#   EXGRPO_CHECKPOINT_LATEST  set by launch-ssh.sh: the content of the learner's checkpoint
#                           directory's latest file, read on the learner's host (unset: read here)

exgrpo_gpu_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The learner <-> worker socket and the flags that name it. The worker's
# rank 0 listens (torchworker --listen); the learner connects.
# A node-local path: Unix sockets do not work on every shared filesystem.
exgrpo_trainer_socket() { echo "${EXGRPO_TRAINER_SOCKET:-/tmp/exgrpo-${EXGRPO_RUN:-run}-trainer.sock}"; }
EXGRPO_LEARNER_SOCKET_FLAG=${EXGRPO_LEARNER_SOCKET_FLAG:---torch-socket}

# exgrpo_engine_port G: the port of engine G on its host.
exgrpo_engine_port() { echo $((${EXGRPO_ENGINE_PORT:-8000} + $1)); }

# exgrpo_engine KIND PORT TP: "PROG|ENV|ARGS" of one engine server on
# 127.0.0.1:PORT over TP GPUs (the caller adds CUDA_VISIBLE_DEVICES).
# GPU.md: vLLM needs --logprobs-mode processed_logprobs (the default
# raw_logprobs ignores the temperature), --max-logprobs >= the top-k asked
# for, and VLLM_SERVER_DEV_MODE=1 for /collective_rpc reload_weights, /pause
# and /resume. SGLang's log-probs follow the temperature by default and its
# /update_weights_from_disk needs no flag.
exgrpo_engine() {
  local kind=$1 port=$2 tp=$3 model=${EXGRPO_MODEL:-MODEL_DIR}
  local len=${EXGRPO_MAX_MODEL_LEN:-9216} k=${EXGRPO_MAX_LOGPROBS:-20} mem=${EXGRPO_GPU_MEMORY:-0.85}
  case $kind in
    vllm)
      echo "${EXGRPO_VLLM:-vllm}|VLLM_SERVER_DEV_MODE=1|serve $model --host 127.0.0.1 --port $port --tensor-parallel-size $tp --dtype bfloat16 --max-model-len $len --logprobs-mode processed_logprobs --max-logprobs $k --gpu-memory-utilization $mem --seed 0 ${EXGRPO_VLLM_ARGS:-}"
      ;;
    sglang)
      echo "${EXGRPO_SGLANG_PYTHON:-python3}|-|-m sglang.launch_server --model-path $model --host 127.0.0.1 --port $port --tp-size $tp --dtype bfloat16 --context-length $len --mem-fraction-static $mem --random-seed 0 ${EXGRPO_SGLANG_ARGS:-}"
      ;;
    *) return 1 ;;
  esac
}

# exgrpo_engine_health PORT: the URL an engine answers 200 on once it serves.
exgrpo_engine_health() { echo "http://127.0.0.1:$1/health"; }

# exgrpo_actor_engine_flags KIND PORT: the actor's flags for the engine beside it.
exgrpo_actor_engine_flags() { echo "--engine $1 --engine-url http://127.0.0.1:$2"; }

# exgrpo_learner_resumes: whether the learner's flags (EXGRPO_TRAIN_ARGS,
# then EXGRPO_LEARNER_ARGS; the last --resume counts) ask it to resume.
exgrpo_learner_resumes() {
  local w r=1
  for w in ${EXGRPO_TRAIN_ARGS:-} ${EXGRPO_LEARNER_ARGS:-}; do
    case $w in
      --resume | -resume | --resume=auto | -resume=auto | --resume=true | -resume=true) r=0 ;;
      --resume=false | -resume=false) r=1 ;;
    esac
  done
  return $r
}

# exgrpo_trainer_model CKPT_DIR: the model the torchrun workers start on. A
# learner resuming from a directory checkpoint refuses a worker that holds
# other weights than the checkpoint's, so when the learner resumes and the
# checkpoint directory's latest file names a checkpoint (the file the
# learner writes; its content from EXGRPO_CHECKPOINT_LATEST when set):
# CKPT_DIR/<that name>/weights; else $EXGRPO_MODEL.
exgrpo_trainer_model() {
  local dir=$1 latest=
  if [[ -n ${EXGRPO_CHECKPOINT_LATEST+set} ]]; then
    latest=$EXGRPO_CHECKPOINT_LATEST
  elif [[ -r $dir/latest ]]; then
    latest=$(<"$dir/latest")
  fi
  latest=${latest//[[:space:]]/}
  if [[ -n $latest && $latest != */* && $latest != . && $latest != .. ]] && exgrpo_learner_resumes; then
    echo "$dir/$latest/weights"
  else
    echo "${EXGRPO_MODEL:-MODEL_DIR}"
  fi
}

# exgrpo_trainer NNODES RANK NPROC MASTER MODEL: "PROG|ENV|ARGS" of one
# node's torchrun, FSDP2 over NPROC GPUs, the worker on MODEL
# (exgrpo_trainer_model); rank 0's worker listens on the socket.
exgrpo_trainer() {
  local nn=$1 rank=$2 nproc=$3 master=$4 model=$5
  echo "${EXGRPO_TORCHRUN:-torchrun}|PYTHONPATH=${EXGRPO_TRAINER_DIR:-$exgrpo_gpu_repo/trainer/torch}|--nnodes $nn --node-rank $rank --nproc-per-node $nproc --master-addr $master --master-port ${EXGRPO_TRAINER_PORT:-29500} -m torchworker --model $model --listen $(exgrpo_trainer_socket) --device cuda --fsdp --gradient-checkpointing --micro-batch-tokens ${EXGRPO_MICRO_BATCH_TOKENS:-16384} ${EXGRPO_TORCHWORKER_ARGS:-}"
}

# exgrpo_learner_trainer_flags: the learner's flags for a torchrun worker.
# --trunc-cap 2 and --trainer-behaviour are GPU.md's answers to the
# engine/trainer mismatch.
exgrpo_learner_trainer_flags() {
  echo "--trainer torch $EXGRPO_LEARNER_SOCKET_FLAG $(exgrpo_trainer_socket) --micro-batch-tokens ${EXGRPO_MICRO_BATCH_TOKENS:-16384} --trunc-cap 2 --trainer-behaviour"
}
