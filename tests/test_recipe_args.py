"""run.sh argument checks (bash only, nothing is trained): every wrong argument
gives one line naming it and a non-zero exit; --help works from anywhere; a
stage whose input is missing names the stage to run first.

Runs every recipe under egs/*/ASR, since they share egs/common/lib.sh."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.parent.relative_to(REPO).as_posix() for p in REPO.glob("egs/*/ASR/run.sh"))


def _run(recipe: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON="false")  # no stage may get as far as Python
    return subprocess.run(["bash", str(REPO / recipe / "run.sh") if cwd != REPO else f"{recipe}/run.sh", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_from_repo_root_documents_every_option(recipe):
    proc = _run(recipe, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Stages 3-9" in text and "PYTHON" in text
    lib = (REPO / "egs/common/lib.sh").read_text()
    names = lib.split('common_options="', 1)[1].split('"', 1)[0].split()
    src = (REPO / recipe / "run.sh").read_text()
    names += src.split('recipe_options="', 1)[1].split('"', 1)[0].split()
    for name in names:
        assert "--" + name.replace("_", "-") in text, name


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("args, message", [
    (["--stage", "abc"], "--stage must be a non-negative integer, got 'abc'"),
    (["--stop-stage", "x1"], "--stop-stage must be a non-negative integer, got 'x1'"),
    (["--stage", "5", "--stop-stage", "3"], "--stage 5 is after --stop-stage 3"),
    (["--stage"], "option --stage needs a value"),
    (["--preset", "--stage", "1"], "option --preset needs a value"),
    (["--no-such-option", "1"], "unknown option --no-such-option"),
    (["--preset", "nope"], "--preset nope: no conf/nope.conf"),
    (["--num-gpus", "two"], "--num-gpus must be a non-negative integer"),
    (["--num-nodes", "2", "--node-rank", "2"], "--node-rank 2 must be below --num-nodes 2"),
    (["--skip-setup", "yes"], "--skip-setup must be true or false"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_argument_is_one_clear_line(recipe, args, message):
    proc = _run(recipe, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and message in lines[0], proc.stderr
    assert "unbound variable" not in proc.stderr


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_from_another_directory(recipe, tmp_path):
    proc = _run(recipe, "-h", cwd=tmp_path)
    assert proc.returncode == 0 and "--stop-stage" in proc.stdout, proc.stderr


def _fake_data(data: Path, bpe_dir: str) -> None:
    (data / "fbank").mkdir(parents=True)
    (data / bpe_dir).mkdir()
    for name in ("fbank/cuts_train.jsonl.gz", "fbank/cuts_dev.jsonl.gz", "fbank/cuts_dev-clean.jsonl.gz",
                 f"{bpe_dir}/bpe.model"):
        (data / name).write_bytes(b"")


def _bpe_dir(recipe: str, preset: str = "micro") -> str:
    """The BPE directory name (lang_bpe_<vocab>) that conf/<preset>.conf gives."""
    return subprocess.run(["bash", "-c", f'recipe_dir=$PWD; . conf/{preset}.conf; echo "lang_bpe_$bpe_vocab"'],
                          cwd=REPO / recipe, capture_output=True, text=True, check=True).stdout.strip()


def _argv_stub(tmp_path: Path) -> Path:
    """A stand-in PYTHON that writes its arguments, one per line, to tmp_path/argv."""
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n')
    stub.chmod(0o755)
    return stub


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("stage, first", [(5, 3), (6, 3), (9, 8)])
def test_missing_input_names_the_stage_to_run_first(recipe, stage, first, tmp_path):
    bpe = _bpe_dir(recipe)
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, bpe)
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    proc = _run(recipe, "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data), "--exp-dir", str(exp),
                "--stage", str(stage), *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"stage {stage} needs " in last and f"run stage {first} first" in last, proc.stderr
    assert not (exp / "stage1").exists() and not (exp / "stage2").exists()


@pytest.mark.parametrize("recipe", RECIPES)
def test_missing_data_names_data_stage(recipe, tmp_path):
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    proc = _run(recipe, "--preset", "micro", "--skip-setup", "true", "--data-dir", str(tmp_path / "d"),
                "--exp-dir", str(tmp_path / "e"), "--stage", "3", *extra)
    assert proc.returncode == 2
    assert "stage 3 needs " in proc.stderr and "run stage 1 first" in proc.stderr, proc.stderr


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("opts, launch", [
    ([], ["-m", "asr_kd.bin.train", "--device", "auto"]),
    (["--num-gpus", "0"], ["-m", "asr_kd.bin.train", "--device", "cpu"]),
    (["--num-gpus", "4", "--num-nodes", "2", "--master-addr", "h1", "--master-port", "1234"],
     ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "4", "--node-rank", "0",
      "--rdzv-backend", "c10d", "--rdzv-endpoint", "h1:1234", "--rdzv-id", "asr-kd-teacher",
      "-m", "asr_kd.bin.train", "--device", "cuda"]),
])
def test_training_launch(recipe, opts, launch, tmp_path):
    """Stage 3's command line, recorded by a stand-in PYTHON: one process, or torchrun."""
    bpe = _bpe_dir(recipe)
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, bpe)
    stub = _argv_stub(tmp_path)
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    env = dict(os.environ, PYTHON=str(stub))
    proc = subprocess.run(["bash", f"{recipe}/run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir",
                           str(data), "--exp-dir", str(exp), "--stage", "3", "--stop-stage", "3", *opts, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[:len(launch)] == launch
    assert argv[len(launch):len(launch) + 3] == ["--exp-dir", str(exp / "teacher"), "--resume"]
    assert (exp / "teacher" / ".done").is_file()


@pytest.mark.parametrize("recipe", RECIPES)
def test_changed_settings_move_the_trained_model_aside(recipe, tmp_path):
    """A finished model whose settings changed is retrained with --overwrite (moved aside), never deleted."""
    bpe = _bpe_dir(recipe)
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, bpe)
    stub = tmp_path / "python"  # records its arguments and "trains" by writing pretrained.pt
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n'
                    f'touch "{exp}/teacher/pretrained.pt" "{exp}/teacher/epoch-1.pt"\n')
    stub.chmod(0o755)
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    cmd = ["bash", f"{recipe}/run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data),
           "--exp-dir", str(exp), "--stage", "3", "--stop-stage", "3", *extra]

    def run(**env):
        proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHON=str(stub), **env),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        recorded = tmp_path / "argv"  # absent when the stage trained nothing
        return (recorded.read_text().split("\n") if recorded.exists() else None), proc.stdout + proc.stderr

    argv, _ = run()
    assert "--resume" in argv and "--overwrite" not in argv
    (tmp_path / "argv").unlink()
    assert run()[0] is None  # same settings: nothing to do
    argv, log = run(seeds="7")  # another seed: the teacher's settings changed
    assert "--overwrite" in argv and "--resume" not in argv
    assert "replaced-" in log
    assert (exp / "teacher" / "epoch-1.pt").is_file()  # the stand-in moves nothing; the script deleted nothing
    (tmp_path / "argv").unlink()
    assert run(seeds="7")[0] is None  # the new run's marker was written: nothing to do


@pytest.mark.parametrize("recipe", RECIPES)
def test_set_overrides_a_preset_variable_and_refuses_unknown_names(recipe, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, _bpe_dir(recipe))
    stub = _argv_stub(tmp_path)
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    base = ["bash", f"{recipe}/run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data),
            "--exp-dir", str(exp), "--stage", "3", "--stop-stage", "3", *extra]

    def run(*opts: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *opts], cwd=REPO, env=dict(os.environ, PYTHON=str(stub)),
                              capture_output=True, text=True, timeout=60)

    proc = run("--set", "teacher_epochs=13", "--set=max_duration=17")
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[argv.index("--num-epochs") + 1] == "13"
    assert argv[argv.index("--max-duration") + 1] == "17"
    assert "--set teacher_epochs=13" in proc.stdout
    marker = (exp / "teacher" / ".done").read_text()
    assert "--num-epochs 13" in marker  # the marker records the overridden value

    proc = run("--set", "teacher_epoch=13")  # a typo
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'teacher_epoch' is not a preset variable" in lines[0]
    assert " teacher_epochs " in lines[0] and " seeds " in lines[0]  # the valid names are listed
    proc = run("--set", "teacher_epochs")
    assert proc.returncode == 2 and "--set needs NAME=VALUE" in proc.stderr


def test_decode_outputs_are_replaced_only_when_complete(tmp_path):
    """Stage 8 decodes into decode.partial: a failed redecode leaves the previous decode intact."""
    recipe = "egs/synth/ASR"
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, _bpe_dir(recipe))
    for name in ("test_seen", "test_heldout"):
        (data / "fbank" / f"cuts_{name}.jsonl.gz").write_bytes(b"")
    (exp / "teacher").mkdir(parents=True)
    (exp / "teacher" / "pretrained.pt").write_bytes(b"weights")
    stub = tmp_path / "python"  # "decodes" by writing recogs-$TAG.txt into --out-dir; fails when FAIL is set
    stub.write_text('#!/bin/sh\nout=; prev=\nfor a in "$@"; do [ "$prev" = --out-dir ] && out=$a; prev=$a; done\n'
                    '[ -z "$FAIL" ] || exit 1\n[ -z "$out" ] || echo "$TAG" >> "$out/recogs-$TAG.txt"\n')
    stub.chmod(0o755)
    cmd = ["bash", f"{recipe}/run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data),
           "--exp-dir", str(exp), "--stage", "8", "--stop-stage", "8"]

    def run(*opts: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *opts], cwd=REPO, env=dict(os.environ, PYTHON=str(stub), **env),
                              capture_output=True, text=True, timeout=60)

    decode = exp / "teacher" / "decode"
    assert run(TAG="first").returncode == 0
    assert (decode / "recogs-first.txt").is_file() and (decode / ".done").is_file()
    first_key = (decode / ".done").read_text()
    assert run("--set", "beam_size=3", TAG="second", FAIL="1").returncode != 0
    assert (decode / "recogs-first.txt").is_file() and (decode / ".done").read_text() == first_key
    assert run("--set", "beam_size=3", TAG="second").returncode == 0
    assert sorted(p.name for p in decode.iterdir()) == [".done", "recogs-second.txt"]
    assert sorted(p.name for p in (exp / "teacher").iterdir()) == ["decode", "pretrained.pt"]


def test_features_are_moved_aside_not_deleted(tmp_path):
    """fbank_sets renames an existing feature directory before computing it again."""
    (tmp_path / "fbank" / "feats_train").mkdir(parents=True)
    (tmp_path / "fbank" / "feats_train" / "old.lca").write_bytes(b"features")
    script = (f'recipe_dir={REPO}/egs/synth/ASR; . {REPO}/egs/common/lib.sh; data={tmp_path}; python=true; '
              'fbank_sets raw "" train')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    moved = list((tmp_path / "fbank").glob("feats_train.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "old.lca").read_bytes() == b"features"
    assert "moved the previous feats_train aside" in proc.stdout


def test_teacher_cache_is_built_once_and_passed_to_the_distilling_stages(tmp_path):
    recipe = "egs/synth/ASR"
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, _bpe_dir(recipe))
    (exp / "teacher").mkdir(parents=True)
    (exp / "teacher" / "pretrained.pt").write_bytes(b"weights")
    calls = tmp_path / "calls"
    stub = tmp_path / "python"  # logs each call on one line; "trains" stage 1 by writing its checkpoints
    stub.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n'
                    f'mkdir -p "{exp}/stage1" "{exp}/teacher-cache"; touch "{exp}/stage1/pretrained.pt" "{exp}/stage1/epoch-1.pt"\n')
    stub.chmod(0o755)
    cmd = ["bash", f"{recipe}/run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data),
           "--exp-dir", str(exp), "--stage", "5", "--stop-stage", "6", "--set", "teacher_cache=true"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHON=str(stub)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 3 and "asr_kd.bin.cache_teacher" in lines[0]
    cache = str(exp / "teacher-cache")
    assert f"--out-dir {cache}" in lines[0]
    assert all(f"--teacher-cache {cache}" in line for line in lines[1:])  # stages 5 and 6
    assert "--kd-stage hidden" in lines[1] and "--kd-stage output" in lines[2]
    calls.unlink()
    (exp / "teacher" / "pretrained.pt").write_bytes(b"another teacher")  # a retrained teacher: cache rebuilt
    proc = subprocess.run([*cmd, "--stop-stage", "5"], cwd=REPO, env=dict(os.environ, PYTHON=str(stub)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "asr_kd.bin.cache_teacher" in calls.read_text().splitlines()[0]
    assert list(exp.glob("teacher-cache.replaced-*"))  # the old cache was moved aside


@pytest.mark.parametrize("recipe, size, data_preset", [("egs/synth/ASR", "cpu", "small"),
                                                       ("egs/librispeech/ASR", "medium", "medium")])
def test_zipformer_conf_builds_on_another_and_trains_the_zipformer(recipe, size, data_preset, tmp_path):
    """conf/zipformer.conf sources another conf: it shares that conf's data dir, its variables stay
    settable with --set, and the teacher is trained with --encoder zipformer at the Zipformer size."""
    probe = (f'recipe_dir={REPO / recipe}; . {REPO}/egs/common/lib.sh; preset=zipformer; load_preset; '
             'echo "$data|$model_size|$(preset_variables)"')
    out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data_dir, model_size, names = out.stdout.strip().split("|")
    assert data_dir == f"data/{data_preset}" and model_size == size
    assert " teacher_epochs " in f" {names} " and " data_preset " in f" {names} "  # from the base conf and its own

    bpe = _bpe_dir(recipe, "zipformer")
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, bpe)
    stub = _argv_stub(tmp_path)
    extra = ["--corpus-dir", str(tmp_path)] if "librispeech" in recipe else []
    proc = subprocess.run(["bash", f"{recipe}/run.sh", "--preset", "zipformer", "--skip-setup", "true",
                           "--data-dir", str(data), "--exp-dir", str(exp), "--stage", "3", "--stop-stage", "3",
                           "--num-gpus", "0", "--set", "teacher_epochs=2", *extra],
                          cwd=REPO, env=dict(os.environ, PYTHON=str(stub)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[argv.index("--encoder") + 1] == "zipformer"
    assert argv[argv.index("--model-size") + 1] == size
    assert argv[argv.index("--num-epochs") + 1] == "2" and "--preset" not in argv


def _small_kd_trainings(tmp_path, stages: str, ablations: str, checkpoints: dict[str, str]) -> tuple[Path, list[str]]:
    """(exp dir, the training command lines) of the small preset's ``stages`` (e.g. "6-7") with a recording stub.

    ``checkpoints`` maps ``name/file.pt`` under the exp dir to stand-ins for the models those stages start from.
    """
    recipe = "egs/synth/ASR"
    data, exp = tmp_path / "data", tmp_path / "exp"
    _fake_data(data, _bpe_dir(recipe, "small"))
    for rel, content in {"teacher/pretrained.pt": "weights", **checkpoints}.items():
        (exp / rel).parent.mkdir(parents=True, exist_ok=True)
        (exp / rel).write_text(content)
    calls = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nmkdir -p "{exp}/teacher-cache"\n')
    stub.chmod(0o755)
    first, last = stages.split("-")
    cmd = ["bash", f"{recipe}/run.sh", "--preset", "small", "--skip-setup", "true", "--data-dir", str(data),
           "--exp-dir", str(exp), "--stage", first, "--stop-stage", last, "--set", f"ablations={ablations}"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHON=str(stub)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return exp, [line for line in calls.read_text().splitlines() if "asr_kd.bin.train" in line]


def test_stage2_delays_the_teacher_and_the_teacher_delay_ablation_sets_its_own(tmp_path):
    exp, trains = _small_kd_trainings(tmp_path, "6-7", "teacher-delay-0 teacher-delay-320",
                                      {"stage1/epoch-2.pt": "stage 1"})
    assert len(trains) == 3
    delays = [line.split("--kd-teacher-delay-ms")[1:] for line in trains]
    assert f"--exp-dir {exp}/stage2 " in trains[0] and [d.split()[0] for d in delays[0]] == ["160"]
    for line, delay, ms in zip(trains[1:], delays[1:], ("0", "320")):
        assert f"--exp-dir {exp}/teacher-delay-{ms} " in line
        assert delay[-1].split() == [ms]  # the ablation's delay comes last and wins over kd_stage2_args'


def test_stage1_delay_and_mask_lead_ablations(tmp_path):
    """stage1-delay-<ms> trains a delayed stage 1 and continues stage 2 from it; mask-lead adds its flag to stage 2."""
    exp, trains = _small_kd_trainings(tmp_path, "7-7", "stage1-delay-80 mask-lead",
                                      {"stage1/epoch-2.pt": "stage 1", "stage1-delay-80-stage1/epoch-2.pt": "delayed"})
    assert len(trains) == 3
    s1, s2, masked = trains
    assert f"--exp-dir {exp}/stage1-delay-80-stage1 " in s1
    assert "--kd-stage hidden" in s1 and s1.split("--kd-teacher-delay-ms")[-1].split() == ["80"]
    assert f"--exp-dir {exp}/stage1-delay-80 " in s2 and "--kd-stage output" in s2
    assert f"--continue-from {exp}/stage1-delay-80-stage1/epoch-2.pt" in s2
    assert s2.split("--kd-teacher-delay-ms")[-1].split()[0] == "160"  # stage 2 keeps kd_stage2_args' delay
    assert f"--exp-dir {exp}/mask-lead " in masked and f"--continue-from {exp}/stage1/epoch-2.pt" in masked
    assert masked.split()[-2:] == ["--kd-mask-lead", "true"]
