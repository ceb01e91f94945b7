"""Multi-node training through the recipe's own launcher, on one machine.

Two copies of ``egs/synth/ASR/run.sh --stage 3 --stop-stage 3`` (the teacher)
run side by side as node 0 and node 1 of a two-node job (``--num-nodes 2
--node-rank 0|1 --num-gpus 0``), meeting through a c10d rendezvous on the
loopback interface and sharing one EXP_DIR, as two machines with a shared
filesystem would. The test shows that:

* the recipe starts ``torch.distributed.run`` on each node with ``--nnodes 2``,
  its own ``--node-rank``, the c10d rendezvous at the given address, and the
  two CPU workers join one gloo process group of world size 2;
* after training, both ranks hold exactly the same parameters (DDP kept them
  in step across the "nodes"), having trained on disjoint, non-empty shares
  of the training cuts;
* the shared EXP_DIR ends with the teacher (``EXP_DIR/teacher/pretrained.pt``)
  and the ``.done`` marker that node 0 writes (recording world=2), and both
  nodes finish with status 0 (node 1 only after node 0's marker is there).

The recipe runs ``-m asr_kd.bin.train`` itself, so each rank's final
parameters are caught by a ``sitecustomize.py`` on PYTHONPATH: in a torchrun
worker (``RANK`` set) with ``RANK_DUMP_DIR`` set it wraps ``Trainer.fit`` and
``Trainer.train_step`` to save ``rank<RANK>.pt`` with the model's state_dict,
the cut ids the rank trained on, the process-group backend and its torchrun
launcher's command line. Everywhere else (bash's python calls, the torchrun
launcher) it does nothing and imports nothing."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "egs/synth/ASR/run.sh"

SITECUSTOMIZE = '''
import os
if os.environ.get("RANK_DUMP_DIR") and os.environ.get("RANK") is not None:
    def _install():
        import torch
        import torch.distributed as dist
        from asr_kd.train import trainer as T

        out = os.environ["RANK_DUMP_DIR"]
        seen = []
        step = T.Trainer.train_step

        def train_step(self, batch, *a, **k):
            seen.extend(batch["cut_ids"])
            return step(self, batch, *a, **k)

        fit = T.Trainer.fit

        def fit_and_dump(self, *a, **k):
            r = fit(self, *a, **k)
            m = getattr(self.model, "module", self.model)
            try:
                with open("/proc/%d/cmdline" % os.getppid(), "rb") as f:
                    launcher = [s.decode() for s in f.read().split(b"\\0") if s]
            except OSError:
                launcher = None
            torch.save({"model": {n: v.detach().cpu() for n, v in m.state_dict().items()},
                        "cut_ids": list(seen),
                        "backend": dist.get_backend() if dist.is_initialized() else None,
                        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                        "launcher": launcher},
                       os.path.join(out, "rank%s.pt" % os.environ["RANK"]))
            return r

        T.Trainer.train_step = train_step
        T.Trainer.fit = fit_and_dump

    _install()
    del _install
'''


def _free_port() -> int:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as e:  # pragma: no cover - sandboxes without loopback sockets
        pytest.skip(f"cannot bind a TCP socket on 127.0.0.1 ({e}): the c10d rendezvous needs one")


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_two_nodes_on_loopback_train_in_step(small_corpus, tmp_path):
    cuts, bpe = small_corpus
    vocab = 24  # conftest's small_corpus BPE; micro.conf has bpe_vocab=60, overridden below
    data, exp, dump, site = tmp_path / "data", tmp_path / "exp", tmp_path / "dump", tmp_path / "site"
    (data / "fbank").mkdir(parents=True)
    (data / f"lang_bpe_{vocab}").mkdir()
    (data / "fbank/cuts_train.jsonl.gz").symlink_to(cuts)
    (data / "fbank/cuts_dev.jsonl.gz").symlink_to(cuts)
    (data / f"lang_bpe_{vocab}/bpe.model").symlink_to(bpe)
    dump.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)

    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=f"{site}{os.pathsep}{REPO}",
               RANK_DUMP_DIR=str(dump), ASR_KD_RNNT_BACKEND=os.environ.get("ASR_KD_RNNT_BACKEND", "torch"))
    common = ["--preset", "micro", "--num-gpus", "0", "--num-nodes", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(port), "--stage", "3", "--stop-stage", "3", "--skip-setup", "true",
              "--data-dir", str(data), "--exp-dir", str(exp),
              "--set", f"bpe_vocab={vocab}", "--set", "teacher_epochs=1", "--set", "max_duration=4",
              "--set", "num_workers=0", "--set", "avg=1",
              "--set", "train_args=--num-buckets 2 --progress false --tensorboard false"]
    procs = []
    for rank in (0, 1):
        out = open(tmp_path / f"node{rank}.out", "w")
        err = open(tmp_path / f"node{rank}.err", "w")
        procs.append((subprocess.Popen(["bash", str(RUN_SH), *common, "--node-rank", str(rank)], env=env,
                                       stdout=out, stderr=err, start_new_session=True), out, err))

    def logs() -> str:
        return "\n".join(f"--- node {r} {s} (tail) ---\n" + (tmp_path / f"node{r}.{s}").read_text()[-3000:]
                         for r in (0, 1) for s in ("out", "err"))

    try:
        for p, _, _ in procs:
            p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        for p, _, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        pytest.fail("the two recipe nodes did not finish within 240 s\n" + logs())
    finally:
        for _, out, err in procs:
            out.close()
            err.close()
    assert [p.returncode for p, _, _ in procs] == [0, 0], logs()

    out0, out1 = ((tmp_path / f"node{r}.out").read_text() for r in (0, 1))
    for text in (out0, out1):
        assert "stage 3: training teacher" in text and "(world size 2)" in text, logs()
        assert "done (stages 3..3)" in text, logs()
        assert "launcher: " in text and "torch.distributed.run --nnodes 2" in text, logs()
    assert "node 1 waits for node 0 to mark teacher done" in out1, logs()
    assert "waits for node 0" not in out0, logs()

    assert (dump / "rank0.pt").is_file() and (dump / "rank1.pt").is_file(), logs()
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    for r in (r0, r1):
        assert r["backend"] == "gloo" and r["world_size"] == 2

    # each rank's launcher: the recipe's torchrun, two nodes, its own node rank, c10d on loopback.
    # (Which node's worker gets global rank 0 is the rendezvous's choice, not --node-rank's:
    # nothing below assumes rank 0 runs on node 0.)
    if Path("/proc/self/cmdline").exists():
        assert r0["launcher"] and r1["launcher"]
        node_ranks = set()
        for r in (r0, r1):
            argv = r["launcher"]
            assert "torch.distributed.run" in argv, argv
            assert _opt(argv, "--nnodes") == "2" and _opt(argv, "--nproc-per-node") == "1", argv
            assert _opt(argv, "--rdzv-backend") == "c10d", argv
            assert _opt(argv, "--rdzv-endpoint") == f"127.0.0.1:{port}", argv
            assert _opt(argv, "--rdzv-id") == "asr-kd-teacher", argv
            assert argv[argv.index("-m", argv.index("torch.distributed.run")):][:2] == ["-m", "asr_kd.bin.train"]
            assert _opt(argv, "--device") == "cpu", argv
            node_ranks.add(_opt(argv, "--node-rank"))
        assert node_ranks == {"0", "1"}  # one worker under each node's launcher

    # the same parameters on both ranks, trained on disjoint shares of the cuts
    assert r0["cut_ids"] and r1["cut_ids"]
    assert not set(r0["cut_ids"]) & set(r1["cut_ids"])
    assert r0["model"].keys() == r1["model"].keys()
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k

    teacher = exp / "teacher"
    assert (teacher / "pretrained.pt").is_file() and (teacher / ".done").is_file()
    assert "world=2" in (teacher / ".done").read_text()
    assert sorted(p.name for p in (teacher / "log").iterdir()) == ["train-rank0.log", "train-rank1.log"]
