# Shared by every corpus recipe (egs/<corpus>/ASR/run.sh): options, presets,
# stage markers and input checks. Sourced (bash), never run.
#
# A recipe run.sh:
#   1. sets recipe_dir (absolute), recipe_name, and the defaults of its own
#      options, listing their names (underscored) in recipe_options;
#   2. sources this file and calls `parse_args "$@"`, then `load_preset`;
#   3. runs its data stages 0-2 with the helpers below;
#   4. sets the data contract variables (see egs/common/stages.sh) and
#      sources egs/common/stages.sh for the model stages 3-9.

common_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- defaults of the options every recipe has
stage=0
stop_stage=100
preset=${preset:-small}
exp_dir=
data_dir=
num_jobs=$(nproc 2>/dev/null || echo 2)
skip_setup=false
num_gpus=
num_nodes=1
node_rank=0
master_addr=localhost
master_port=29500
preset_overrides=()  # NAME=VALUE pairs of --set, applied over the preset by load_preset
common_options="stage stop_stage preset exp_dir data_dir num_jobs skip_setup num_gpus num_nodes node_rank master_addr master_port"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [run.sh] $*"; }
# die MESSAGE: one line on stderr, exit 2 (wrong arguments or missing input)
die() { echo "run.sh: $*" >&2; exit 2; }

common_usage() {
  cat <<EOF
Options every recipe has (model stages: egs/common/stages.sh):
  --stage N / --stop-stage M   run stages N..M only (integers, N <= M; default 0..100)
  --preset NAME                conf/NAME.conf (default: $preset); available: $(ls "$recipe_dir/conf" | sed 's/\.conf$//' | tr '\n' ' ')
  --data-dir DIR               manifests, features and BPE model (default data/<preset>)
  --exp-dir DIR                models, decodes, results.json, RESULTS.md (default exp/<preset>)
  --num-jobs J                 parallel jobs for data preparation and features (default: nproc)
  --skip-setup true|false      true: do not check/install tools and Python packages (default false)
  --num-gpus G                 GPUs per node; 0: CPU (default: one process, on a GPU when
                               there is one, else on the CPU). G > 1 or --num-nodes > 1
                               launches training with torchrun (c10d rendezvous; NCCL on
                               GPU, gloo on CPU), G processes per node
  --num-nodes N                machines taking part in training (default 1); run the same command
                               on every machine, EXP_DIR and DATA_DIR on a shared filesystem
  --node-rank R                this machine's index, 0..N-1 (default 0); only node 0 decodes
                               (stages 8-9) and writes markers
  --master-addr A              rendezvous host, reachable from every node (default localhost)
  --master-port P              rendezvous port (default 29500)
  --set NAME=VALUE             override one preset variable of conf/<preset>.conf or of the
                               model stages for this run (repeatable; e.g. --set teacher_epochs=8
                               --set max_duration=200); stage markers record the value, so a
                               changed value redoes what depends on it (default: none)
  -h, --help                   this text

Environment:
  PYTHON                       the Python interpreter that has asr_kd installed (default python3)
  OMP_NUM_THREADS              bounds the threads of each training/decoding process

Stages 3-9 (the same for every corpus):
  3  full-context teacher                     -> EXP_DIR/teacher/pretrained.pt
  4  streaming baseline (chunk-wise student)  -> EXP_DIR/baseline/pretrained.pt
  5  stage-1 KD: hidden-layer MSE             -> EXP_DIR/stage1/pretrained.pt   (needs stage 3)
  6  stage-2 KD: lattice KL, from stage 1     -> EXP_DIR/stage2/pretrained.pt   (needs stages 3, 5)
  7  ablations and controls, seed replicates  -> EXP_DIR/<name>/pretrained.pt  (needs 3, 4, 5)
  8  decode every model into EXP_DIR/<name>/decode and EXP_DIR/results.json
  9  RESULTS.md and wer_vs_latency.png        -> EXP_DIR                        (needs stage 8)

$(sed -n '/^# Preset variables/,/^$/{s/^# \{0,1\}//;p}' "$common_dir/stages.sh")

Each stage writes a marker when it has finished (DATA_DIR/.stageN.done,
EXP_DIR/<model>/.done, EXP_DIR/<model>/decode/.done, EXP_DIR/.stage9.done)
holding the settings it ran with; a rerun skips a stage whose marker matches and
redoes one that was interrupted or whose settings changed (training resumes from
its newest checkpoint). Redoing a data stage removes the markers of later data
stages; a retrained model retrains the models that learn from it.
EOF
}

# usage: the recipe's header comment, then the common options
usage() {
  sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$recipe_dir/run.sh"
  echo
  common_usage
}

is_option() { case " $common_options ${recipe_options:-} " in *" $1 "*) return 0 ;; esac; return 1; }

# parse_args "$@": --name VALUE for every name in common_options and
# recipe_options (dashes or underscores); -h/--help prints usage.
parse_args() {
  local opt var
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --set)
        { [ $# -ge 2 ] && [[ "$2" == [a-z_]*=* ]]; } || die "--set needs NAME=VALUE (a preset variable), got '${2:-}'"
        preset_overrides+=("$2")
        shift 2 ;;
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      --*)
        opt=${1#--}
        var=${opt//-/_}
        is_option "$var" || die "unknown option $1 (see --help)"
        { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]]; } || die "option $1 needs a value (see --help)"
        printf -v "$var" '%s' "$2"
        shift 2 ;;
      *) die "unexpected argument '$1': options are --name VALUE (see --help)" ;;
    esac
  done
  check_common_args
}

# check_uint NAME VALUE: VALUE is a non-negative integer
check_uint() { [[ "$2" =~ ^[0-9]+$ ]] || die "--$1 must be a non-negative integer, got '$2'"; }
check_bool() { case "$2" in true|false) ;; *) die "--$1 must be true or false, got '$2'" ;; esac; }

check_common_args() {
  check_uint stage "$stage"
  check_uint stop-stage "$stop_stage"
  [ "$stage" -le "$stop_stage" ] || die "--stage $stage is after --stop-stage $stop_stage: nothing to run"
  check_uint num-jobs "$num_jobs"
  [ "$num_jobs" -ge 1 ] || die "--num-jobs must be at least 1"
  check_bool skip-setup "$skip_setup"
  [ -z "$num_gpus" ] || check_uint num-gpus "$num_gpus"
  check_uint num-nodes "$num_nodes"
  [ "$num_nodes" -ge 1 ] || die "--num-nodes must be at least 1"
  check_uint node-rank "$node_rank"
  [ "$node_rank" -lt "$num_nodes" ] || die "--node-rank $node_rank must be below --num-nodes $num_nodes"
  check_uint master-port "$master_port"
  [ -f "$recipe_dir/conf/$preset.conf" ] ||
    die "--preset $preset: no conf/$preset.conf (have: $(ls "$recipe_dir/conf" | sed 's/\.conf$//' | tr '\n' ' '))"
}

# preset_variables: the names --set accepts: those conf/<preset>.conf assigns and the
# optional ones the model stages and the recipe default with NAME=${NAME:-...}
preset_variables() {
  # a conf may build on another one (a line '. "$recipe_dir/conf/NAME.conf"'): its variables count too
  local -a confs=("$recipe_dir/$conf")
  local base
  for base in $(sed -n 's/^\. "\$recipe_dir\/\(conf\/[A-Za-z0-9_-]*\.conf\)".*/\1/p' "$recipe_dir/$conf"); do
    confs+=("$recipe_dir/$base")
  done
  { sed -n 's/^\([a-z_][a-z0-9_]*\)=.*/\1/p' "${confs[@]}"
    sed -n 's/^\([a-z_][a-z0-9_]*\)=\${\1:-.*/\1/p' "$common_dir/stages.sh" "$recipe_dir/run.sh"
  } | sort -u | tr '\n' ' '
}

# load_preset: sources conf/<preset>.conf, applies --set, and sets conf, data, exp_dir, python
load_preset() {
  local kv name valid
  conf=conf/${preset}.conf
  # shellcheck disable=SC1090
  . "$recipe_dir/$conf"
  if [ ${#preset_overrides[@]} -gt 0 ]; then
    valid=" $(preset_variables)"
    for kv in "${preset_overrides[@]}"; do
      name=${kv%%=*}
      case "$valid" in
        *" $name "*) ;;
        *) die "--set $kv: '$name' is not a preset variable of $conf or the model stages (valid:$valid)" ;;
      esac
      printf -v "$name" '%s' "${kv#*=}"
      log "--set $name=${kv#*=} (over $conf)"
    done
  fi
  # data_preset (a conf variable): share the data dir of the conf this one builds on
  data=${data_dir:-data/${data_preset:-$preset}}
  exp_dir=${exp_dir:-exp/${preset}}
  python=${PYTHON:-python3}
  mkdir -p "$data" "$exp_dir"
}

# move_aside PATH: a finished output about to be rebuilt is renamed PATH.replaced-<time>
# (named in the log), never deleted: the user decides what to remove
move_aside() {
  [ -e "$1" ] || return 0
  local to
  to="$1.replaced-$(date +%Y%m%d-%H%M%S)-$$"
  mv "$1" "$to"
  log "moved the previous $(basename "$1") aside to $to"
}

run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# stage_done MARKER KEY: the stage finished before with the same settings
stage_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
# mark_done MARKER KEY: on node 0 only (the other nodes of a multi-node run share its files)
mark_done() { [ "$node_rank" -eq 0 ] || return 0; echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }
# start_stage N: stage N is (re)done, so everything after it is out of date
start_stage() {
  local m
  for m in $(seq "$1" 99); do rm -f "$data/.stage$m.done" "$exp_dir/.stage$m.done"; done
}
# need N FILE M: stage N reads FILE, which stage M writes
need() { [ -e "$2" ] || die "stage $1 needs $2: run stage $3 first (--stage $3)"; }

# fbank_sets RAW_DIR SPEED PART...: features of RAW_DIR/cuts_<part>_raw.jsonl.gz
# into $data/fbank/cuts_<part>.jsonl.gz (feature files in $data/fbank/feats_<part>);
# SPEED: extra speed factors for the first part (e.g. 0.9,1.1; "" for none)
fbank_sets() {
  local raw=$1 speed=$2 part sp
  shift 2
  for part in "$@"; do
    sp=()
    [ -z "$speed" ] || [ "$part" != "$1" ] || sp=(--speed-factors "$speed")
    move_aside "$data/fbank/feats_$part"
    "$python" -m asr_kd.bin.compute_fbank --cuts "$raw/cuts_${part}_raw.jsonl.gz" \
      --out-cuts "$data/fbank/cuts_${part}.jsonl.gz" --storage "$data/fbank/feats_$part" \
      --num-jobs "$num_jobs" --force "${sp[@]}"
  done
}

# bpe_stage N TRANSCRIPTS: stage N trains the BPE model (bpe_vocab) on TRANSCRIPTS into lang_dir
bpe_stage() {
  local n=$1 transcripts=$2 key
  need "$n" "$transcripts" $((n - 1))
  key="vocab=$bpe_vocab transcripts=$(sha256sum "$transcripts" | cut -d' ' -f1)"
  if stage_done "$data/.stage$n.done" "$key"; then
    log "stage $n: BPE model already trained ($lang_dir/bpe.model)"
  else
    log "stage $n: BPE model, vocabulary $bpe_vocab -> $lang_dir"
    start_stage "$n"
    "$python" -m asr_kd.bin.train_bpe --transcripts "$transcripts" --out-dir "$lang_dir" --vocab-size "$bpe_vocab"
    mark_done "$data/.stage$n.done" "$key"
  fi
}
