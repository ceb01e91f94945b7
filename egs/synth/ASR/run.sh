#!/usr/bin/env bash
# The synth recipe: an offline multi-voice English corpus, then (later stages)
# teacher, streaming baseline, two-stage distillation, decoding and results.
#
#   bash run.sh [--stage N] [--stop-stage M] [--preset tiny|small|full|micro] [--exp-dir DIR]
#               [--data-dir DIR] [--num-jobs J] [--skip-setup true]
#
# Stages:
#   0  corpus: synthesise speech + word times  -> data/<preset>/corpus
#   1  lhotse manifests + fbank features       -> data/<preset>/{manifests,fbank}
#   2  BPE model (sentencepiece)                -> data/<preset>/lang_bpe_<vocab>
#   3  full-context teacher                     -> EXP_DIR/teacher/pretrained.pt
#   4  streaming baseline (chunk-wise student)  -> EXP_DIR/baseline/pretrained.pt
#   5  stage-1 KD: hidden-layer MSE             -> EXP_DIR/stage1/pretrained.pt
#   6  stage-2 KD: lattice KL, from stage 1     -> EXP_DIR/stage2/pretrained.pt
#   7  ablations ($ablations) and controls ($controls) -> EXP_DIR/<name>/pretrained.pt
#   8  decode every model into EXP_DIR/<name>/decode and EXP_DIR/results.json
#   9  RESULTS.md and wer_vs_latency.png        -> EXP_DIR
#
# Options:
#   --stage N / --stop-stage M   run stages N..M only (default 0..100)
#   --preset NAME                conf/NAME.conf: tiny (smoke, <=10 min), small (default, ~2 h 20 min on 2 cores), full, micro (tests)
#   --data-dir DIR               corpus, manifests, features and BPE model (default data/<preset>)
#   --exp-dir DIR                models, decodes, results.json, RESULTS.md (default exp/<preset>)
#   --num-jobs J                 parallel jobs for synthesis and features (default: nproc)
#   --skip-setup true            do not check/install Debian tools and Python packages
# Preset variables for stages 5-9 (all optional): seeds ("42 43": the first seeds
# every main model, each further one adds baseline-seed<i>, stage1-seed<i> and
# stage2-seed<i>), ablations (joint temperature collapsed delay-penalty), controls
# (baseline-cont), kd_stage1_args / kd_stage2_args (extra --kd-* flags; empty:
# the library defaults), decode_chunk_ms (default chunk_size*40), decode_threads,
# beam_size, train_jobs (2: teacher and baseline train in parallel), delay_penalty
# (of the delay-penalty ablation; default 0.005). Set OMP_NUM_THREADS to bound
# training threads.
#
# Each stage writes a marker when it has finished (DATA_DIR/.stageN.done,
# EXP_DIR/<model>/.done, EXP_DIR/<model>/decode/.done, EXP_DIR/.stage9.done),
# holding the settings it ran with; a
# rerun skips a stage whose marker matches its settings and redoes a stage that
# was interrupted or whose settings changed (the corpus builder keeps the
# utterances that are already built). Redoing a stage removes the markers of
# all later stages, so they are redone too. Presets live in conf/<preset>.conf.
set -euo pipefail

cd "$(dirname "$0")"
recipe_dir=$(pwd)
export PYTHONPATH="$recipe_dir/../../..${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=100
preset=small
exp_dir=
data_dir=
num_jobs=$(nproc 2>/dev/null || echo 2)
skip_setup=false

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage="$2"; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --exp-dir|--exp_dir) exp_dir="$2"; shift 2 ;;
    --data-dir|--data_dir) data_dir="$2"; shift 2 ;;
    --num-jobs|--num_jobs) num_jobs="$2"; shift 2 ;;
    --skip-setup) skip_setup="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

conf=conf/${preset}.conf
[ -f "$conf" ] || { echo "run.sh: no preset '$preset' ($conf missing; have: $(ls conf | sed 's/\.conf//' | tr '\n' ' '))" >&2; exit 2; }
# shellcheck source=conf/small.conf
. "$conf"

data=${data_dir:-data/${preset}}
exp_dir=${exp_dir:-exp/${preset}}
python=${PYTHON:-python3}
train_set=train
dev_set=dev
test_sets="test_seen test_heldout"
eval_sets="$dev_set $test_sets"
lang_dir=$data/lang_bpe_${bpe_vocab}
# optional preset settings (later stages)
seeds=${seeds:-42}
main_seed=${seeds%% *}
ablations=${ablations:-}
controls=${controls:-}
kd_stage1_args=${kd_stage1_args:-}
kd_stage2_args=${kd_stage2_args:-}
decode_chunk_ms=${decode_chunk_ms:-$((chunk_size * 40))}
decode_threads=${decode_threads:-1}
train_jobs=${train_jobs:-1}
delay_penalty=${delay_penalty:-0.005}
beam_size=${beam_size:-4}
mkdir -p "$data" "$exp_dir"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [run.sh] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# stage_done MARKER KEY: the stage finished before with the same settings
stage_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
mark_done() { echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }
# start_stage N: stage N is (re)done, so everything after it is out of date
start_stage() {
  local n m
  n=$1
  for m in $(seq "$n" 99); do rm -f "$data/.stage$m.done" "$exp_dir/.stage$m.done"; done
}

log "preset=$preset data=$data exp_dir=$exp_dir stages $stage..$stop_stage num_jobs=$num_jobs"

if [ "$skip_setup" != true ]; then
  need_debs=false
  run_stage 0 && need_debs=true
  PYTHON=$python bash local/setup.sh --debs "$need_debs" --python true
fi

if run_stage 0; then
  key="$(grep '^BUILDER_VERSION' local/build_corpus.py) train=$train_utts dev=$dev_utts test_seen=$test_seen_utts test_heldout=$test_heldout_utts babble=$babble_utts seed=$corpus_seed snr=$snr_range text=$text_weights"
  if stage_done "$data/.stage0.done" "$key"; then
    log "stage 0: corpus already built ($data/corpus)"
  else
    log "stage 0: synthesising the corpus into $data/corpus"
    start_stage 0
    "$python" local/build_corpus.py --out-dir "$data/corpus" \
      --train "$train_utts" --dev "$dev_utts" --test-seen "$test_seen_utts" --test-heldout "$test_heldout_utts" \
      --num-babble "$babble_utts" --seed "$corpus_seed" --snr "$snr_range" --text-weights "$text_weights" \
      --num-jobs "$num_jobs"
    mark_done "$data/.stage0.done" "$key"
  fi
fi

if run_stage 1; then
  key="corpus=$(cat "$data/corpus/plan.jsonl" "$data/corpus/failed.txt" 2>/dev/null | sha256sum | cut -d' ' -f1) sets=$train_set,$eval_sets"
  if stage_done "$data/.stage1.done" "$key"; then
    log "stage 1: manifests and features already computed ($data/fbank)"
  else
    log "stage 1: lhotse manifests ($data/manifests) and fbank features ($data/fbank)"
    start_stage 1
    "$python" local/make_manifests.py --corpus-dir "$data/corpus" --out-dir "$data/manifests"
    for part in $train_set $eval_sets; do
      rm -rf "$data/fbank/feats_$part"
      "$python" -m asr_kd.bin.compute_fbank --cuts "$data/manifests/cuts_${part}_raw.jsonl.gz" \
        --out-cuts "$data/fbank/cuts_${part}.jsonl.gz" --storage "$data/fbank/feats_$part" \
        --num-jobs "$num_jobs" --force
    done
    mark_done "$data/.stage1.done" "$key"
  fi
fi

if run_stage 2; then
  key="vocab=$bpe_vocab transcripts=$(sha256sum "$data/manifests/transcripts_train.txt" 2>/dev/null | cut -d' ' -f1)"
  if stage_done "$data/.stage2.done" "$key"; then
    log "stage 2: BPE model already trained ($lang_dir/bpe.model)"
  else
    log "stage 2: BPE model, vocabulary $bpe_vocab -> $lang_dir"
    start_stage 2
    "$python" -m asr_kd.bin.train_bpe --transcripts "$data/manifests/transcripts_train.txt" \
      --out-dir "$lang_dir" --vocab-size "$bpe_vocab"
    mark_done "$data/.stage2.done" "$key"
  fi
fi

# ---- experiment stages: every model is trained by the same entry point ----
cuts_train=$data/fbank/cuts_${train_set}.jsonl.gz
cuts_dev=$data/fbank/cuts_${dev_set}.jsonl.gz
bpe_model=$lang_dir/bpe.model
common_train_args=(--cuts-train "$cuts_train" --cuts-valid "$cuts_dev" --bpe-model "$bpe_model"
  --preset "$model_preset" --max-duration "$max_duration" --num-workers "$num_workers" --lr "$lr"
  --warmup-batches "$warmup_batches" --lr-batches "$lr_batches" --lr-epochs "$lr_epochs"
  --warm-step "$warm_step" --avg "$avg")
student_args=(--causal true --chunk-size "$chunk_size" --left-context "$left_context")

# model_key ARGS...: a model's marker key: its training arguments plus the checksum
# of every checkpoint the run starts from or learns from (teacher, --init-from),
# so retraining the teacher retrains its students.
model_key() {
  local key="$*" arg
  for arg in "$@"; do
    case "$arg" in *.pt) [ -f "$arg" ] && key="$key $(sha256sum "$arg" | cut -d' ' -f1)" ;; esac
  done
  echo "$key"
}
# model_done NAME KEY: NAME finished training with this marker key
model_done() { stage_done "$exp_dir/$1/.done" "$2" && [ -f "$exp_dir/$1/pretrained.pt" ]; }
# train_model STAGE NAME ARGS...: trains $exp_dir/NAME unless its marker matches;
# an interrupted run resumes from its newest checkpoint.
train_model() {
  local n=$1 name=$2 key
  shift 2
  key=$(model_key "$@")
  if model_done "$name" "$key"; then
    log "stage $n: $name already trained ($exp_dir/$name/pretrained.pt)"
    return 0
  fi
  log "stage $n: training $name -> $exp_dir/$name"
  if [ -f "$exp_dir/$name/.done" ]; then  # settings changed: start over
    rm -rf "$exp_dir/$name"
  fi
  mkdir -p "$exp_dir/$name"
  "$python" -m asr_kd.bin.train --exp-dir "$exp_dir/$name" --resume "$@"
  mark_done "$exp_dir/$name/.done" "$key"
}

teacher_args=("${common_train_args[@]}" --seed "$main_seed" --causal false --num-epochs "$teacher_epochs")
baseline_args=("${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$student_epochs")
train_teacher() { train_model 3 teacher "${teacher_args[@]}"; }
train_baseline() { train_model 4 baseline "${baseline_args[@]}"; }

# The teacher and the baseline do not depend on each other. With train_jobs=2 they
# train side by side, each process on nproc/2 threads (unless OMP_NUM_THREADS is
# set): on 2 cores two 1-thread runs get more done than one 2-thread run after
# the other. Their output then goes to EXP_DIR/{teacher,baseline}.out.
if run_stage 3 && run_stage 4 && [ "$train_jobs" -ge 2 ] &&
   ! { model_done teacher "$(model_key "${teacher_args[@]}")" &&
       model_done baseline "$(model_key "${baseline_args[@]}")"; }; then
  ncores=$(nproc 2>/dev/null || echo 2)
  threads=${OMP_NUM_THREADS:-$(( ncores > 1 ? ncores / 2 : 1 ))}
  log "stages 3+4: teacher and baseline in parallel, $threads thread(s) each" \
      "(progress: tail -f $exp_dir/teacher.out $exp_dir/baseline.out)"
  (export OMP_NUM_THREADS=$threads; train_teacher) > "$exp_dir/teacher.out" 2>&1 &
  teacher_pid=$!
  (export OMP_NUM_THREADS=$threads; train_baseline) > "$exp_dir/baseline.out" 2>&1 &
  baseline_pid=$!
  # kill both on Ctrl-C; a rerun resumes each from its newest checkpoint
  trap 'pkill -P "$teacher_pid"; pkill -P "$baseline_pid"; kill "$teacher_pid" "$baseline_pid"' INT TERM
  failed=""
  wait "$teacher_pid" || failed="teacher"
  wait "$baseline_pid" || failed="$failed baseline"
  trap - INT TERM
  if [ -n "$failed" ]; then
    log "stages 3+4 failed:$failed (see $exp_dir/<model>.out)"
    for m in $failed; do tail -n 20 "$exp_dir/$m.out" >&2; done
    exit 1
  fi
  cat "$exp_dir/teacher.out" "$exp_dir/baseline.out" | grep '\[run.sh\]' || true
else
  if run_stage 3; then train_teacher; fi
  if run_stage 4; then train_baseline; fi
fi

if run_stage 5; then
  # shellcheck disable=SC2086  # kd_stage1_args holds several flags
  train_model 5 stage1 "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$stage1_epochs" \
    --kd-stage hidden --teacher-checkpoint "$exp_dir/teacher/pretrained.pt" $kd_stage1_args
fi

if run_stage 6; then
  # shellcheck disable=SC2086
  train_model 6 stage2 "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$stage2_epochs" \
    --kd-stage output --teacher-checkpoint "$exp_dir/teacher/pretrained.pt" \
    --init-from "$exp_dir/stage1/pretrained.pt" $kd_stage2_args
fi

if run_stage 7; then
  teacher_ckpt=(--teacher-checkpoint "$exp_dir/teacher/pretrained.pt")
  # An ablation keeps the tuned KD flags of the stage it replaces and changes one
  # thing; its own flag comes last, so it wins over the same flag in kd_stage*_args.
  # shellcheck disable=SC2086
  for name in $ablations $controls; do
    case "$name" in
      # one-stage hierarchical KD: hidden + output terms together, the baseline's budget from scratch
      joint) train_model 7 joint "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$student_epochs" \
               "${teacher_ckpt[@]}" $kd_stage1_args $kd_stage2_args --kd-stage joint ;;
      # Hinton-style fixed temperature instead of adaptive power smoothing, from stage 1
      temperature) train_model 7 temperature "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_ckpt[@]}" --init-from "$exp_dir/stage1/pretrained.pt" \
               $kd_stage2_args --kd-stage output --kd-smoothing temperature ;;
      # collapsed 3-way {blank, next label, rest} distribution (Panchapagesan et al. 2021), from stage 1
      collapsed) train_model 7 collapsed "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_ckpt[@]}" --init-from "$exp_dir/stage1/pretrained.pt" \
               $kd_stage2_args --kd-stage output --kd-distribution collapsed ;;
      # control for variants that start from the trained baseline: the same extra epochs without KD
      baseline-cont) train_model 7 baseline-cont "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" --init-from "$exp_dir/baseline/pretrained.pt" ;;
      # the baseline trained with k2's delay penalty (no distillation): the latency reference
      delay-penalty) train_model 7 delay-penalty "${baseline_args[@]}" --delay-penalty "$delay_penalty" ;;
      *) echo "run.sh: unknown ablation/control '$name' (joint temperature collapsed delay-penalty baseline-cont)" >&2
         exit 2 ;;
    esac
  done
  # seed replicates of the main comparison: baseline and stage 1 -> 2 again, each from seed number i
  i=1
  for s in $seeds; do
    if [ "$i" -gt 1 ]; then
      train_model 7 "baseline-seed$i" "${common_train_args[@]}" --seed "$s" "${student_args[@]}" \
        --num-epochs "$student_epochs"
      # shellcheck disable=SC2086
      train_model 7 "stage1-seed$i" "${common_train_args[@]}" --seed "$s" "${student_args[@]}" \
        --num-epochs "$stage1_epochs" --kd-stage hidden "${teacher_ckpt[@]}" $kd_stage1_args
      # shellcheck disable=SC2086
      train_model 7 "stage2-seed$i" "${common_train_args[@]}" --seed "$s" "${student_args[@]}" \
        --num-epochs "$stage2_epochs" --kd-stage output "${teacher_ckpt[@]}" \
        --init-from "$exp_dir/stage1-seed$i/pretrained.pt" $kd_stage2_args
    fi
    i=$((i + 1))
  done
fi

# the student models stages 4-7 train, in table order
seed_models=
i=1
for s in $seeds; do
  [ "$i" -gt 1 ] && seed_models="$seed_models baseline-seed$i stage1-seed$i stage2-seed$i"
  i=$((i + 1))
done
student_models="baseline stage1 stage2 $ablations $controls$seed_models"

# decode_model NAME KIND: KIND teacher (offline) or student (simulated and true streaming)
decode_model() {
  local name=$1 kind=$2 ckpt key out set
  ckpt=$exp_dir/$name/pretrained.pt
  [ -f "$ckpt" ] || { log "stage 8: no $ckpt; skipping $name"; return 0; }
  out=$exp_dir/$name/decode
  key="$(sha256sum "$ckpt" | cut -d' ' -f1) $kind sets=$eval_sets chunks=$decode_chunk_ms beam=$beam_size threads=$decode_threads"
  if stage_done "$out/.done" "$key"; then
    log "stage 8: $name already decoded"
    return 0
  fi
  log "stage 8: decoding $name ($kind)"
  rm -rf "$out"
  mkdir -p "$out"
  local dec=("$python" -m asr_kd.bin.decode --checkpoint "$ckpt" --model-name "$name" --out-dir "$out"
             --results-json "$exp_dir/results.json" --num-threads "$decode_threads" --no-progress)
  for set in $eval_sets; do
    local cuts=$data/fbank/cuts_${set}.jsonl.gz
    if [ "$kind" = teacher ]; then
      "${dec[@]}" --cuts "$cuts" --method greedy --mode offline
    else
      for mode in simulated-streaming streaming; do
        # shellcheck disable=SC2086  # decode_chunk_ms may list several chunk sizes
        "${dec[@]}" --cuts "$cuts" --method greedy --mode "$mode" --chunk-sizes-ms $decode_chunk_ms
      done
    fi
  done
  for set in $test_sets; do  # beam search on the test sets only
    local cuts=$data/fbank/cuts_${set}.jsonl.gz
    if [ "$kind" = teacher ]; then
      "${dec[@]}" --cuts "$cuts" --method modified_beam_search --beam "$beam_size" --mode offline
    else
      # shellcheck disable=SC2086
      "${dec[@]}" --cuts "$cuts" --method modified_beam_search --beam "$beam_size" --mode streaming \
        --chunk-sizes-ms $decode_chunk_ms
    fi
  done
  mark_done "$out/.done" "$key"
}

if run_stage 8; then
  decode_model teacher teacher
  for name in $student_models; do
    decode_model "$name" student
  done
fi

if run_stage 9; then
  # paired bootstrap of stage 2 against the baseline trained from the same seed
  pairs=stage2:baseline
  i=1
  for s in $seeds; do
    [ "$i" -gt 1 ] && pairs="$pairs stage2-seed$i:baseline-seed$i"
    i=$((i + 1))
  done
  key="$(sha256sum "$exp_dir/results.json" 2>/dev/null | cut -d' ' -f1) sets=$eval_sets pairs=$pairs"
  if stage_done "$exp_dir/.stage9.done" "$key" && [ -f "$exp_dir/RESULTS.md" ]; then
    log "stage 9: $exp_dir/RESULTS.md is up to date"
  else
    log "stage 9: $exp_dir/RESULTS.md and $exp_dir/wer_vs_latency.png"
    # shellcheck disable=SC2086  # eval_sets and pairs are lists
    "$python" -m asr_kd.bin.results --results-json "$exp_dir/results.json" --test-sets $eval_sets \
      --out-md "$exp_dir/RESULTS.md" --out-png "$exp_dir/wer_vs_latency.png" --exp-dir "$exp_dir" \
      --bootstrap $pairs --bootstrap-setting greedy-streaming \
      --header "preset: $preset ($conf); commit: $(git -C "$recipe_dir" rev-parse --short HEAD 2>/dev/null || echo unknown); machine: $(getconf _NPROCESSORS_ONLN) CPU cores, $(uname -m)" \
      --header "decoding threads: $decode_threads; student chunk: $decode_chunk_ms ms; left context: $((left_context * 40)) ms"
    mark_done "$exp_dir/.stage9.done" "$key"
  fi
fi

log "done (stages $stage..$stop_stage)"
