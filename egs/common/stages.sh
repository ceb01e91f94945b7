# The model stages 3-9 (teacher ... results), written once for every corpus
# recipe. Sourced by egs/<corpus>/ASR/run.sh after egs/common/lib.sh and the
# recipe's data stages 0-2; runs from the recipe directory.
#
# Data contract (set by the recipe before sourcing):
#   data, exp_dir, python, preset, conf, recipe_dir   (load_preset sets these)
#   train_set, dev_set     names of the training and validation sets
#   test_sets              evaluation sets besides dev_set (beam search runs on these)
#   lang_dir               holds bpe.model (written by stage 2)
#   $data/fbank/cuts_<set>.jsonl.gz for train_set, dev_set and test_sets, with
#     features (written by stage 1); supervisions with word alignments give
#     latency columns, otherwise see decode_align below.
#
# Preset variables (conf/<preset>.conf):
#   required: model_size chunk_size left_context max_duration num_workers lr
#     warmup_batches lr_batches lr_epochs warm_step avg teacher_epochs
#     student_epochs stage1_epochs stage2_epochs
#     (chunk_size, left_context: comma lists in 40 ms encoder frames, -1 = full context /
#     unlimited; training gets them in ms, see frames_to_ms)
#   optional (default):
#     seeds ("42")            the first seeds every main model; each further one adds
#                             baseline-seed<i>, stage1-seed<i>, stage2-seed<i>
#     ablations ("")          any of: joint temperature collapsed teacher-delay-<ms>
#                             stage1-delay-<ms> mask-lead delay-penalty
#     controls ("")           baseline-cont
#     kd_stage1_args, kd_stage2_args ("")  extra --kd-* flags of stages 5 and 6
#     train_args ("")         extra flags of every training run (e.g. --amp auto)
#     train_jobs (1)          2: teacher and baseline train side by side (CPU only)
#     delay_penalty (0.005)   of the delay-penalty ablation
#     decode_chunk_ms (chunk_size*40)  student decoding chunk sizes in ms (a list)
#     student_decode_modes ("streaming")  greedy modes of the students: streaming (true
#                             streaming with caches) and/or simulated-streaming
#     beam_chunk_ms (first of decode_chunk_ms)  chunk sizes of the students' beam search
#     train_subset_utts (100) the teacher also decodes (offline greedy) the first N
#                             training cuts: row "train_subset", a learning sanity check (0: off)
#     decode_threads (1), beam_size (4)
#     decode_jobs (1)         CPU only: decode up to N models at once in stage 8, each
#                             on decode_threads threads (2 on 2 cores: a decode job is
#                             single-threaded, so one core would otherwise idle)
#     teacher_cache (false)   true: stage 5 first stores the teacher's encoder outputs of
#                             the train and dev cuts (asr_kd.bin.cache_teacher, layers
#                             teacher_cache_layers, "-1") in EXP_DIR/teacher-cache, and the
#                             distilling stages read them instead of running the teacher
#                             encoder; needs clean teacher input (no speed perturbation)
#     decode_align ("")       "teacher": cuts without word alignments get reference
#                             word times by forced alignment with the teacher; RESULTS
#                             then labels latency as model-aligned

cuts_of() { echo "$data/fbank/cuts_$1.jsonl.gz"; }

# model_size (asr_kd.bin.train --model-size) was called model_preset before: older confs still work
model_size=${model_size:-${model_preset:-}}
[ -n "$model_size" ] || die "the conf sets no model_size (a model size of asr_kd.bin.train --model-size)"

seeds=${seeds:-42}
main_seed=${seeds%% *}
ablations=${ablations:-}
controls=${controls:-}
kd_stage1_args=${kd_stage1_args:-}
kd_stage2_args=${kd_stage2_args:-}
train_args=${train_args:-}
decode_chunk_ms=${decode_chunk_ms:-$((${chunk_size%%,*} * 40))}
student_decode_modes=${student_decode_modes:-streaming}
beam_chunk_ms=${beam_chunk_ms:-${decode_chunk_ms%% *}}
train_subset_utts=${train_subset_utts:-100}
decode_threads=${decode_threads:-1}
train_jobs=${train_jobs:-1}
decode_jobs=${decode_jobs:-1}
delay_penalty=${delay_penalty:-0.005}
beam_size=${beam_size:-4}
decode_align=${decode_align:-}
teacher_cache=${teacher_cache:-false}
teacher_cache_layers=${teacher_cache_layers:--1}
eval_sets="$dev_set $test_sets"

cuts_train=$(cuts_of "$train_set")
cuts_dev=$(cuts_of "$dev_set")
bpe_model=$lang_dir/bpe.model
teacher_ckpt=$exp_dir/teacher/pretrained.pt
# shellcheck disable=SC2206  # train_args holds several flags
common_train_args=(--cuts-train "$cuts_train" --cuts-valid "$cuts_dev" --bpe-model "$bpe_model"
  --model-size "$model_size" --max-duration "$max_duration" --num-workers "$num_workers" --lr "$lr"
  --warmup-batches "$warmup_batches" --lr-batches "$lr_batches" --lr-epochs "$lr_epochs"
  --warm-step "$warm_step" --avg "$avg" $train_args)
# frames_to_ms NAME LIST: the comma LIST of 40 ms encoder frames (chunk_size, left_context of the
# confs) in milliseconds, as asr_kd.bin.train's --chunk-ms / --left-context-ms take them; -1 stays -1
frames_to_ms() {
  local out="" f
  local -a frames
  IFS=, read -r -a frames <<< "${2// /}"
  [ "${#frames[@]}" -gt 0 ] || die "$1 is empty"
  for f in "${frames[@]}"; do
    [[ "$f" =~ ^(-1|[0-9]+)$ ]] || die "$1=$2: expected comma-separated encoder frames (40 ms each) or -1, got '$f'"
    if [ "$f" = -1 ]; then out+="${out:+,}-1"; else out+="${out:+,}$((10#$f * 40))"; fi
  done
  echo "$out"
}
student_chunk_ms=$(frames_to_ms chunk_size "$chunk_size")
student_left_context_ms=$(frames_to_ms left_context "$left_context")
student_args=(--causal true --chunk-ms "$student_chunk_ms" --left-context-ms "$student_left_context_ms")

# ---- how a training run is launched: one process, or torchrun
# --num-gpus not given: one process on --device auto (CUDA when there is one, else CPU)
procs_per_node=$(( ${num_gpus:-0} > 1 ? num_gpus : 1 ))
world_size=$(( procs_per_node * num_nodes ))
case "$num_gpus" in "") train_device=auto ;; 0) train_device=cpu ;; *) train_device=cuda ;; esac
# train_launcher NAME: sets launcher to the command that runs asr_kd.bin.train for model NAME
train_launcher() {
  if [ "$world_size" -gt 1 ]; then
    launcher=("$python" -m torch.distributed.run --nnodes "$num_nodes" --nproc-per-node "$procs_per_node"
      --node-rank "$node_rank" --rdzv-backend c10d --rdzv-endpoint "$master_addr:$master_port"
      --rdzv-id "asr-kd-$1" -m asr_kd.bin.train --device "$train_device")
  else
    launcher=("$python" -m asr_kd.bin.train --device "$train_device")
  fi
}

# model_key ARGS...: a model's marker key: its training arguments plus the checksum
# of every checkpoint the run starts from or learns from (teacher, --init-from),
# so retraining the teacher retrains its students. The world size is part of it:
# a run cannot resume under another one (the sampler state is per rank).
model_key() {
  local key="$*" arg
  [ "$world_size" -eq 1 ] || key="$key world=$world_size"
  for arg in "$@"; do
    case "$arg" in *.pt) [ -f "$arg" ] && key="$key $(sha256sum "$arg" | cut -d' ' -f1)" ;; esac
  done
  echo "$key"
}
# model_done NAME KEY: NAME finished training with this marker key
model_done() { stage_done "$exp_dir/$1/.done" "$2" && [ -f "$exp_dir/$1/pretrained.pt" ]; }
# train_model STAGE NAME ARGS...: trains $exp_dir/NAME unless its marker matches;
# an interrupted run resumes from its newest checkpoint; a finished run whose settings
# changed is moved aside (never deleted) and NAME trains afresh.
train_model() {
  local n=$1 name=$2 key arg launcher
  shift 2
  for arg in "$@"; do  # checkpoints this model starts from or learns from
    case "$arg" in *.pt) need "$n" "$arg" "$(stage_writing "$arg")" ;; esac
  done
  key=$(model_key "$@")
  if model_done "$name" "$key"; then
    log "stage $n: $name already trained ($exp_dir/$name/pretrained.pt)"
    return 0
  fi
  log "stage $n: training $name -> $exp_dir/$name (world size $world_size)"
  local start=(--resume)  # an interrupted run continues from its newest checkpoint
  if [ -f "$exp_dir/$name/.done" ]; then
    # settings changed since $name finished: start afresh, but never delete a trained model --
    # the trainer's --overwrite moves its checkpoints to $exp_dir/$name/replaced-<UTC time>-<run id>/.
    # The old marker goes, so that an interruption of the new run resumes the new run.
    log "stage $n: $name was trained with other settings; its files move to $exp_dir/$name/replaced-<time>-<run id>/"
    [ "$node_rank" -ne 0 ] || rm -f "$exp_dir/$name/.done"
    start=(--overwrite)
  fi
  mkdir -p "$exp_dir/$name"
  train_launcher "$name"
  [ "$world_size" -eq 1 ] || log "stage $n: launcher: ${launcher[*]}"
  "${launcher[@]}" --exp-dir "$exp_dir/$name" "${start[@]}" "$@"
  mark_done "$exp_dir/$name/.done" "$key"
  if [ "$node_rank" -gt 0 ]; then  # node 0 writes the marker; wait for it before going on
    local t=0
    log "stage $n: node $node_rank waits for node 0 to mark $name done"
    until model_done "$name" "$key"; do
      [ "$t" -lt 600 ] || die "node $node_rank: node 0 has not marked $name done in $exp_dir/$name/.done after 600 s (is EXP_DIR shared?)"
      sleep 2; t=$((t + 2))
    done
  fi
}
# stage_writing CKPT: the stage that trains the model of EXP_DIR/<name>/pretrained.pt
stage_writing() {
  case "$(basename "$(dirname "$1")")" in
    teacher) echo 3 ;; baseline) echo 4 ;; stage1) echo 5 ;; stage2) echo 6 ;; *) echo 7 ;;
  esac
}

need_data() {  # need_data STAGE: the features and the BPE model of stages 1 and 2
  need "$1" "$cuts_train" 1
  need "$1" "$cuts_dev" 1
  need "$1" "$bpe_model" 2
}

teacher_args=("${common_train_args[@]}" --seed "$main_seed" --causal false --num-epochs "$teacher_epochs")
baseline_args=("${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$student_epochs")
train_teacher() { train_model 3 teacher "${teacher_args[@]}"; }
train_baseline() { train_model 4 baseline "${baseline_args[@]}"; }

if run_stage 3 || run_stage 4; then need_data "$(run_stage 3 && echo 3 || echo 4)"; fi
# The teacher and the baseline do not depend on each other. With train_jobs=2 they
# train side by side, each process on nproc/2 threads (unless OMP_NUM_THREADS is
# set): on 2 cores two 1-thread runs get more done than one 2-thread run after
# the other. Their output then goes to EXP_DIR/{teacher,baseline}.out. Not with
# GPUs or torchrun: there one run uses every device.
if run_stage 3 && run_stage 4 && [ "$train_jobs" -ge 2 ] && [ "$train_device" != cuda ] && [ "$world_size" -eq 1 ] &&
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

# teacher_flags: how the distilling stages reach the teacher; with teacher_cache=true
# the cache is (re)built first when the teacher or the layers changed
teacher_flags() {
  teacher_flag=(--teacher-checkpoint "$teacher_ckpt")
  [ "$teacher_cache" = true ] || return 0
  local dir=$exp_dir/teacher-cache key
  need "$1" "$teacher_ckpt" 3
  key="teacher=$(sha256sum "$teacher_ckpt" | cut -d' ' -f1) layers=$teacher_cache_layers cuts=$(cat "$cuts_train" "$cuts_dev" | sha256sum | cut -d' ' -f1)"
  if ! stage_done "$dir/.done" "$key"; then
    move_aside "$dir"
    log "stage $1: storing the teacher's encoder outputs in $dir"
    "$python" -m asr_kd.bin.cache_teacher --teacher-checkpoint "$teacher_ckpt" --cuts "$cuts_train" \
      --cuts "$cuts_dev" --out-dir "$dir" --layers "$teacher_cache_layers" --progress false
    mark_done "$dir/.done" "$key"
  fi
  teacher_flag+=(--teacher-cache "$dir")
}

if run_stage 5; then
  need_data 5
  teacher_flags 5
  # shellcheck disable=SC2086  # kd_stage1_args holds several flags
  train_model 5 stage1 "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$stage1_epochs" \
    --kd-stage hidden "${teacher_flag[@]}" $kd_stage1_args
fi

if run_stage 6; then
  need_data 6
  teacher_flags 6
  # shellcheck disable=SC2086
  train_model 6 stage2 "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$stage2_epochs" \
    --kd-stage output "${teacher_flag[@]}" \
    --continue-from "$exp_dir/stage1/epoch-$stage1_epochs.pt" $kd_stage2_args
fi

if run_stage 7; then
  need_data 7
  teacher_flags 7
  # An ablation keeps the tuned KD flags of the stage it replaces and changes one
  # thing; its own flag comes last, so it wins over the same flag in kd_stage*_args.
  # shellcheck disable=SC2086
  for name in $ablations $controls; do
    case "$name" in
      # one-stage hierarchical KD: hidden + output terms together, the baseline's budget from scratch
      joint) train_model 7 joint "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" --num-epochs "$student_epochs" \
               "${teacher_flag[@]}" $kd_stage1_args $kd_stage2_args --kd-stage joint ;;
      # Hinton-style fixed temperature instead of adaptive power smoothing, from stage 1
      temperature) train_model 7 temperature "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_flag[@]}" --continue-from "$exp_dir/stage1/epoch-$stage1_epochs.pt" \
               $kd_stage2_args --kd-stage output --kd-smoothing temperature ;;
      # collapsed 3-way {blank, next label, rest} distribution (Panchapagesan et al. 2021), from stage 1
      collapsed) train_model 7 collapsed "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_flag[@]}" --continue-from "$exp_dir/stage1/epoch-$stage1_epochs.pt" \
               $kd_stage2_args --kd-stage output --kd-distribution collapsed ;;
      # stage 2 with the teacher delayed by <ms> instead of kd_stage2_args' delay (teacher-delay-0: undelayed), from stage 1
      teacher-delay-*) train_model 7 "$name" "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_flag[@]}" --continue-from "$exp_dir/stage1/epoch-$stage1_epochs.pt" \
               $kd_stage2_args --kd-stage output --kd-teacher-delay-ms "${name#teacher-delay-}" ;;
      # stage 1 with the teacher delayed by <ms> too (its model in <name>-stage1), then stage 2 as kd_stage2_args says
      stage1-delay-*) train_model 7 "$name-stage1" "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage1_epochs" --kd-stage hidden "${teacher_flag[@]}" $kd_stage1_args \
               --kd-teacher-delay-ms "${name#stage1-delay-}"
             train_model 7 "$name" "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" --kd-stage output "${teacher_flag[@]}" \
               --continue-from "$exp_dir/$name-stage1/epoch-$stage1_epochs.pt" $kd_stage2_args ;;
      # stage 2 without teacher targets at the u = 0 nodes (--kd-mask-lead; the default preset already passes it), from stage 1
      mask-lead) train_model 7 mask-lead "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" "${teacher_flag[@]}" --continue-from "$exp_dir/stage1/epoch-$stage1_epochs.pt" \
               $kd_stage2_args --kd-stage output --kd-mask-lead true ;;
      # control for variants that start from the trained baseline: the same extra epochs without KD
      baseline-cont) train_model 7 baseline-cont "${common_train_args[@]}" --seed "$main_seed" "${student_args[@]}" \
               --num-epochs "$stage2_epochs" --continue-from "$exp_dir/baseline/epoch-$student_epochs.pt" ;;
      # the baseline trained with k2's delay penalty (no distillation): the latency reference
      delay-penalty) train_model 7 delay-penalty "${baseline_args[@]}" --delay-penalty "$delay_penalty" ;;
      *) die "unknown ablation/control '$name' in $conf (joint temperature collapsed teacher-delay-<ms> stage1-delay-<ms> mask-lead delay-penalty baseline-cont)" ;;
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
        --num-epochs "$stage1_epochs" --kd-stage hidden "${teacher_flag[@]}" $kd_stage1_args
      # shellcheck disable=SC2086
      train_model 7 "stage2-seed$i" "${common_train_args[@]}" --seed "$s" "${student_args[@]}" \
        --num-epochs "$stage2_epochs" --kd-stage output "${teacher_flag[@]}" \
        --continue-from "$exp_dir/stage1-seed$i/epoch-$stage1_epochs.pt" $kd_stage2_args
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
# decode_key NAME KIND: the marker key of NAME's decode (its checkpoint and every decoding setting)
decode_key() {
  local key
  key="$(sha256sum "$exp_dir/$1/pretrained.pt" | cut -d' ' -f1) $2 sets=$eval_sets chunks=$decode_chunk_ms modes=$student_decode_modes beam=$beam_size@$beam_chunk_ms subset=$train_subset_utts threads=$decode_threads device=$train_device"
  [ "$decode_align" != teacher ] || key="$key align=$(sha256sum "$teacher_ckpt" | cut -d' ' -f1)"
  echo "$key"
}
# decode_done NAME KIND: NAME is decoded with today's settings (or has no checkpoint to decode)
decode_done() {
  [ -f "$exp_dir/$1/pretrained.pt" ] || return 0
  stage_done "$exp_dir/$1/decode/.done" "$(decode_key "$1" "$2")"
}

decode_model() {
  local name=$1 kind=$2 ckpt key out set align=()
  ckpt=$exp_dir/$name/pretrained.pt
  [ -f "$ckpt" ] || { log "stage 8: no $ckpt; skipping $name"; return 0; }
  if [ "$decode_align" = teacher ]; then
    align=(--align-checkpoint "$teacher_ckpt")
  elif [ -n "$decode_align" ]; then
    die "decode_align=$decode_align in $conf: empty or teacher"
  fi
  out=$exp_dir/$name/decode
  key=$(decode_key "$name" "$kind")
  if stage_done "$out/.done" "$key"; then
    log "stage 8: $name already decoded"
    return 0
  fi
  log "stage 8: decoding $name ($kind)"
  # decoded into $out.partial, which replaces $out only once complete: an interrupted
  # decode never leaves a half-written decode/ that stage 9 would read
  local final=$out
  out=$final.partial
  rm -rf "$out"  # only ever an interrupted decode of this model
  mkdir -p "$out"
  local dec=("$python" -m asr_kd.bin.decode --checkpoint "$ckpt" --model-name "$name" --out-dir "$out"
             --results-json "$exp_dir/results.json" --num-threads "$decode_threads" --no-progress
             --device "$train_device" "${align[@]}")
  for set in $eval_sets; do
    if [ "$kind" = teacher ]; then
      "${dec[@]}" --cuts "$(cuts_of "$set")" --method greedy --mode offline
    else
      for mode in $student_decode_modes; do
        # shellcheck disable=SC2086  # decode_chunk_ms may list several chunk sizes
        "${dec[@]}" --cuts "$(cuts_of "$set")" --method greedy --mode "$mode" --chunk-sizes-ms $decode_chunk_ms
      done
    fi
  done
  for set in $test_sets; do  # beam search on the test sets only
    if [ "$kind" = teacher ]; then
      "${dec[@]}" --cuts "$(cuts_of "$set")" --method modified_beam_search --beam "$beam_size" --mode offline
    else
      # shellcheck disable=SC2086
      "${dec[@]}" --cuts "$(cuts_of "$set")" --method modified_beam_search --beam "$beam_size" --mode streaming \
        --chunk-sizes-ms $beam_chunk_ms
    fi
  done
  if [ "$kind" = teacher ] && [ "$train_subset_utts" -gt 0 ]; then
    # does the teacher recognise its own training speech? (a model that learnt nothing fails here too)
    "$python" -c 'import sys; from lhotse import load_manifest_lazy
load_manifest_lazy(sys.argv[1]).subset(first=int(sys.argv[2])).to_file(sys.argv[3])' \
      "$cuts_train" "$train_subset_utts" "$out/cuts_train_subset.jsonl.gz"
    "${dec[@]}" --cuts "$out/cuts_train_subset.jsonl.gz" --test-set-name train_subset --method greedy --mode offline
  fi
  mark_done "$out/.done" "$key"
  [ ! -e "$final" ] || mv "$final" "$final.old.$$"
  mv "$out" "$final"
  rm -rf "$final.old.$$"  # the superseded decode, replaced by the complete new one
}

if [ "$node_rank" -gt 0 ] && [ "$stop_stage" -ge 8 ]; then
  log "stages 8-9: node 0 decodes and writes the results; node $node_rank is done"
  stop_stage=7
fi

if run_stage 8; then
  for set in $eval_sets; do need 8 "$(cuts_of "$set")" 1; done
  need 8 "$teacher_ckpt" 3
  if [ "$decode_jobs" -ge 2 ] && [ "$train_device" != cuda ]; then
    # every model decodes into its own directory and results.json is updated under a
    # lock, so models can decode side by side; each job's output goes to
    # EXP_DIR/<model>.decode.out
    log "stage 8: up to $decode_jobs models at a time (progress: tail -f $exp_dir/*.decode.out)"
    pids=() names=() failed=""
    for spec in teacher:teacher $(for n in $student_models; do echo "$n:student"; done); do
      if decode_done "${spec%%:*}" "${spec#*:}"; then  # nothing to do: no job, no output file
        decode_model "${spec%%:*}" "${spec#*:}"
        continue
      fi
      while [ "$(jobs -rp | wc -l)" -ge "$decode_jobs" ]; do wait -n || true; done
      decode_model "${spec%%:*}" "${spec#*:}" > "$exp_dir/${spec%%:*}.decode.out" 2>&1 &
      pids+=("$!") names+=("${spec%%:*}")
    done
    trap 'for p in "${pids[@]}"; do pkill -P "$p"; kill "$p"; done 2>/dev/null' INT TERM
    for i in "${!pids[@]}"; do
      wait "${pids[$i]}" || failed="$failed ${names[$i]}"
    done
    trap - INT TERM
    for n in ${names[@]+"${names[@]}"}; do grep '\[run.sh\]' "$exp_dir/$n.decode.out" || true; done
    if [ -n "$failed" ]; then
      for n in $failed; do tail -n 20 "$exp_dir/$n.decode.out" >&2; done
      die "stage 8 failed for:$failed (see $exp_dir/<model>.decode.out)"
    fi
  else
    decode_model teacher teacher
    for name in $student_models; do
      decode_model "$name" student
    done
  fi
fi

if run_stage 9; then
  need 9 "$exp_dir/results.json" 8
  # paired bootstrap of stage 2 and of every ablation against the baseline trained from the same seed
  pairs=stage2:baseline
  for name in $ablations; do pairs="$pairs $name:baseline"; done
  i=1
  for s in $seeds; do
    [ "$i" -gt 1 ] && pairs="$pairs stage2-seed$i:baseline-seed$i"
    i=$((i + 1))
  done
  latency_note=
  [ "$decode_align" = teacher ] &&
    latency_note="; latency: model-aligned (reference word times forced-aligned with the teacher; favours students distilled from it) where the corpus has no word alignments"
  key="$(sha256sum "$exp_dir/results.json" | cut -d' ' -f1) sets=$eval_sets pairs=$pairs@${decode_chunk_ms%% *} align=$decode_align"
  if stage_done "$exp_dir/.stage9.done" "$key" && [ -f "$exp_dir/RESULTS.md" ]; then
    log "stage 9: $exp_dir/RESULTS.md is up to date"
  else
    log "stage 9: $exp_dir/RESULTS.md and $exp_dir/wer_vs_latency.png"
    # shellcheck disable=SC2086  # eval_sets and pairs are lists
    subset_set=
    [ "$train_subset_utts" -gt 0 ] && subset_set=train_subset
    bootstrap_chunk_ms=${decode_chunk_ms%% *}  # the main setting: the first decoding chunk
    "$python" -m asr_kd.bin.results --results-json "$exp_dir/results.json" --test-sets $eval_sets $subset_set \
      --out-md "$exp_dir/RESULTS.md" --out-png "$exp_dir/wer_vs_latency.png" --exp-dir "$exp_dir" \
      --bootstrap $pairs --bootstrap-setting "greedy-streaming-chunk${bootstrap_chunk_ms}ms" \
      --header "preset: $preset ($conf); commit: $(git -C "$recipe_dir" rev-parse --short HEAD 2>/dev/null || echo unknown); machine: $(getconf _NPROCESSORS_ONLN) CPU cores, $(uname -m)" \
      --header "decoding threads: $decode_threads per model, $decode_jobs model(s) at a time; student chunk: $decode_chunk_ms ms; left context: ${student_left_context_ms%%,*} ms$latency_note"
    mark_done "$exp_dir/.stage9.done" "$key"
  fi
fi

log "done (stages $stage..$stop_stage)"
