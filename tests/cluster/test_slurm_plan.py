"""`kitctl train --launcher slurm`: the train planner over nodes x GPUs, rendered to sbatch (no Slurm needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kitctl.cluster import slurm
from kitctl.core.config import KitConfig, Nccl
from data_ref import write_shard
from kitctl.core.errors import KitError
from kitctl.host.gpus import parse_csv
from kitctl.cluster.slurm import SlurmOptions
from kitctl.train import Facts, TrainRequest, build_plan
from kitctl.train.facts import DataInfo, HostFacts, OutState, Shard

H100X8 = "\n".join(f"{i}, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06" for i in range(8))
FINEWEB = DataInfo(Path("/lustre/data/fineweb10B"), "fineweb",
                   tuple(Shard(f"fineweb_train_{i:06d}.bin", 100_000_000) for i in range(1, 100)),
                   (Shard("fineweb_val_000000.bin", 100_000_000),), "ab" * 32)


def facts(runtime_root: str = "/lustre/data") -> Facts:
    root = Path(runtime_root)
    return Facts(gpus=parse_csv(H100X8), data=FINEWEB, out=OutState(root / "runs" / "gpt2-124m"), data_root=root,
                 host=HostFacts(uid=1000, gid=1000, mpirun="/usr/bin/mpirun", environ_nccl=()),
                 nccl_env={"NCCL_SOCKET_IFNAME": "ib0", "NCCL_IB_DISABLE": "0"},
                 hellaswag=root / "hellaswag" / "hellaswag_val.bin", tokenizer=root / "gpt2_tokenizer.bin")


def cluster_plan(nodes: int, gpus_per_node=None, runtime="docker", spec="all", **req):
    f = facts()
    gpus = slurm.node_gpus(f.gpus, spec, gpus_per_node)
    return build_plan(TrainRequest(runtime=runtime, gpus="all", **req), slurm.cluster_facts(f, gpus, nodes)), gpus


def flag(text: str, f: str) -> str:
    return next(ln.split()[1] for ln in text.splitlines() if ln.startswith(f"  {f} "))



def test_two_h100_nodes_plan_16_ranks_with_481_batch(shared):
    plan, gpus = cluster_plan(2)
    assert plan.decisions.ranks == 16 and len(gpus) == 8
    # 524288 = B x 1024 x 16 x accum: B=64 cannot divide it over 16 ranks; of those that can, B=16 is the
    # fastest the throughput table measured on H100 (kitctl/train/throughput.yaml), so accum 2
    assert plan.decisions.batch.micro_batch == 16 and plan.decisions.grad_accum == 2
    s = slurm.render_plan(plan, SlurmOptions(nodes=2, gpus_per_node=8, shared_dir=shared, container="pyxis",
                                             image="/lustre/img/llmc-kit.sqsh", partition="h100", time="3:00:00"))
    t = s.text
    assert s.ranks == 16 and s.micro_batch == 16
    assert "#SBATCH --nodes=2\n" in t and "#SBATCH --ntasks-per-node=8\n" in t and "#SBATCH --gres=gpu:8\n" in t
    assert "#SBATCH --job-name=llmc-gpt2-124m\n" in t
    assert "#SBATCH --output=/lustre/data/runs/gpt2-124m/slurm-%j.out\n" in t
    assert "PROGRAM=/opt/llmc/bin/train_gpt2cu\n" in t
    assert flag(t, "-b") == "16" and flag(t, "-d") == "524288" and flag(t, "-e") == "d12" and flag(t, "-y") == "0"
    assert flag(t, "-o") == "/workspace/out" and flag(t, "-i") == "'/workspace/data/fineweb_train_*.bin'"
    # the docker plan's mounts, as pyxis mounts; llm.c's working dir
    assert ("--container-mounts=/lustre/data/fineweb10B:/workspace/data:ro,/lustre/data/runs/gpt2-124m:/workspace/out,"
            "/lustre/data/hellaswag:/workspace/dev/data/hellaswag:ro,"
            "/lustre/data/gpt2_tokenizer.bin:/workspace/gpt2_tokenizer.bin:ro,") in t
    assert "--container-workdir=/workspace" in t
    assert "export NCCL_SOCKET_IFNAME=ib0\n" in t and "export NCCL_IB_DISABLE=0\n" in t
    assert "export CUDA_DEVICE_ORDER=PCI_BUS_ID\n" in t
    for dropped in ("HOME=", "OMPI_", "CUDA_VISIBLE_DEVICES="):   # Slurm owns the GPUs; no mpirun; no HOME
        assert f"export {dropped}" not in t
    assert "preset gpt2-124m (d12, bf16)" in t


def test_nodes_that_do_not_divide_the_batch_are_refused_by_the_planner():
    # 3 x 8 = 24 ranks: 524288 = 2^19 is no multiple of B x 1024 x 24 for any B
    with pytest.raises(KitError) as e:
        cluster_plan(3)
    assert "not a multiple of B x T x ranks" in str(e.value) and "24" in str(e.value)


def test_explicit_micro_batch_that_does_not_divide_is_refused(shared):
    with pytest.raises(KitError) as e:
        cluster_plan(2, micro_batch=64)
    assert "64 x 1024 x 16" in str(e.value)


def test_gpus_per_node_takes_the_first_gpus_of_the_node(shared):
    plan, gpus = cluster_plan(4, gpus_per_node=4)
    assert plan.decisions.ranks == 16 and [g.index for g in gpus] == [0, 1, 2, 3]
    t = slurm.render_plan(plan, SlurmOptions(nodes=4, gpus_per_node=4, shared_dir=shared, container="apptainer",
                                             sif=shared / "k.sif"), check_paths=False).text
    assert "#SBATCH --nodes=4\n" in t and "#SBATCH --gres=gpu:4\n" in t
    assert "apptainer exec --nv --bind /lustre/data/fineweb10B:/workspace/data:ro" in t


def test_more_gpus_per_node_than_the_inventory_is_refused():
    with pytest.raises(KitError) as e:
        cluster_plan(2, gpus_per_node=16)
    assert "--gpus-per-node 16 but the node inventory has 8 GPU(s)" in e.value.message


def test_login_node_without_gpus_says_how_to_describe_a_compute_node():
    with pytest.raises(KitError) as e:
        slurm.node_gpus([], "all", None)
    assert "no GPU inventory for the compute nodes" in e.value.message
    assert "srun -N1 --exclusive nvidia-smi --query-gpu=" in e.value.hint and "--inventory node.csv" in e.value.hint


def test_native_plan_runs_host_binary_in_llmc_cwd(shared):
    plan, _ = cluster_plan(2, runtime="native", binary=Path("/lustre/kit/train_gpt2cu"))
    t = slurm.render_plan(plan, SlurmOptions(nodes=2, gpus_per_node=8, shared_dir=shared, container="none")).text
    assert "PROGRAM=/lustre/kit/train_gpt2cu\n" in t
    assert "--chdir=/lustre/data/runs/gpt2-124m/.llmc-cwd" in t
    assert flag(t, "-o") == "/lustre/data/runs/gpt2-124m"
    assert "export CUDA_VISIBLE_DEVICES" not in t and "container" not in t[t.index("\nsrun "):]


def test_plan_and_container_mode_must_agree(shared):
    plan, _ = cluster_plan(2)
    with pytest.raises(KitError) as e:
        slurm.render_plan(plan, SlurmOptions(nodes=2, gpus_per_node=8, shared_dir=shared, container="none"))
    assert "needs a native plan, got a docker plan" in e.value.message


# ------------------------------------------------------------------------------ the flow, reading real files
def _shards(d: Path, n_tokens: int = 20_000) -> Path:
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_shard(d / "tiny_val_000000.bin", rng.integers(0, 50257, n_tokens, dtype=np.uint16))
    write_shard(d / "tiny_train_000001.bin", rng.integers(0, 50257, n_tokens, dtype=np.uint16))
    return d


def test_train_on_slurm_writes_script_and_run_json(tmp_path, shared, capsys):
    from kitctl.cluster.slurm_run import train_on_slurm

    cfg = KitConfig(data_root=tmp_path / "data", nccl=Nccl(socket_ifname="eth9"))
    data = _shards(tmp_path / "data" / "tiny")
    inv = tmp_path / "node.csv"
    inv.write_text("\n".join(f"{i}, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06" for i in range(2)))
    req = TrainRequest(data=data, name="tiny", seq_len=64, total_batch=16384, steps=10)
    opts = SlurmOptions(nodes=2, shared_dir=shared, container="none")

    # --dry-run prints the script and writes nothing
    dry = train_on_slurm(cfg, req, opts, inventory=inv, dry_run=True)
    assert dry.path is None and not (tmp_path / "data" / "runs" / "tiny").exists()
    printed = capsys.readouterr().out
    assert printed.startswith("slurm: 2 node(s) x 2 GPU(s) = 4 ranks") and "#!/bin/bash" in printed

    launch = train_on_slurm(cfg, req, opts, inventory=inv)
    run = tmp_path / "data" / "runs" / "tiny"
    assert launch.path == run / "sbatch.sh" and launch.path.read_text() == dry.script.text
    t = launch.script.text
    assert "#SBATCH --gres=gpu:2\n" in t and "RANKS=4\n" in t
    assert flag(t, "-t") == "64" and flag(t, "-d") == "16384" and flag(t, "-x") == "10"
    assert int(flag(t, "-b")) * 64 * 4 * launch.script.grad_accum == 16384
    assert "export NCCL_SOCKET_IFNAME=eth9\n" in t
    rec = json.loads((run / "run.json").read_text())
    assert rec["plan"]["ranks"] == 4 and rec["session"]["launcher"] == "slurm" and rec["session"]["job_id"] is None
    assert (run / ".llmc-cwd").is_dir()
    assert "submit it with: sbatch" in capsys.readouterr().out


def test_train_on_slurm_checks_shared_dir_first(tmp_path):
    from kitctl.cluster.slurm_run import plan_slurm

    with pytest.raises(KitError) as e:   # before any data is read: there is none here
        plan_slurm(KitConfig(data_root=tmp_path), TrainRequest(), SlurmOptions(nodes=2, container="none"))
    assert "needs a shared folder" in e.value.message


def test_nodes_that_no_micro_batch_can_serve_get_a_nodes_hint(tmp_path, shared):
    from kitctl.cluster.slurm_run import plan_slurm

    cfg = KitConfig(data_root=tmp_path / "data")
    data = _shards(tmp_path / "data" / "tiny")
    inv = tmp_path / "node.csv"
    inv.write_text(H100X8)
    with pytest.raises(KitError) as e:
        plan_slurm(cfg, TrainRequest(data=data), SlurmOptions(nodes=3, shared_dir=shared, container="none"), inv)
    assert "not a multiple of B x T x ranks = 1 x 1024 x 24 (3 node(s) x 8 GPUs)" in e.value.message
    assert "--nodes 1 or 2 or 4 (with 8 GPUs per node)" in e.value.hint


@pytest.mark.parametrize("kw,msg", [({"nodes": 0}, "--nodes must be a whole number >= 1"),
                                    ({"nodes": -2}, "--nodes must be a whole number >= 1"),
                                    ({"nodes": 2, "gpus_per_node": 0}, "--gpus-per-node must be a whole number >= 1")])
def test_non_positive_node_counts_refused_before_planning(tmp_path, shared, kw, msg):
    from kitctl.cluster.slurm_run import plan_slurm

    data = _shards(tmp_path / "data" / "tiny")
    inv = tmp_path / "node.csv"
    inv.write_text(H100X8)
    with pytest.raises(KitError) as e:   # was: internal error ZeroDivisionError
        plan_slurm(KitConfig(data_root=tmp_path / "data"), TrainRequest(data=data),
                   SlurmOptions(shared_dir=shared, container="none", **kw), inv, check_paths=False)
    assert msg in e.value.message and e.value.exit_code == 2 and e.value.hint


def test_non_positive_total_batch_gets_the_planner_refusal_not_a_nodes_hint(tmp_path, shared):
    from kitctl.cluster.slurm_run import plan_slurm

    data = _shards(tmp_path / "data" / "tiny")
    inv = tmp_path / "node.csv"
    inv.write_text(H100X8)
    with pytest.raises(KitError) as e:
        plan_slurm(KitConfig(data_root=tmp_path / "data"), TrainRequest(data=data, total_batch=-5),
                   SlurmOptions(nodes=2, shared_dir=shared, container="none"), inv, check_paths=False)
    assert "positive number of tokens" in e.value.message and "--nodes" not in e.value.hint
