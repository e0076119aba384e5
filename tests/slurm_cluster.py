"""A real, throw-away Slurm cluster on this machine, from Debian's slurm-wlm and munge packages.

Two nodes ``n1``/``n2`` (two slurmd daemons on loopback, ``slurmd -N``; Debian builds Slurm with
multiple-slurmd support), each with 2 CPUs and 2 fake GPUs (``Gres=gpu:2``, device files that are symlinks
to /dev/null), one controller, one munged with its own key and socket. Everything lives in a temporary
folder, on free ports, as root (CI and the dev sessions run as root). ``stop()`` cancels jobs and ends the
daemons it started, by pid.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}
NODES = ("n1", "n2")
CPUS = 2
GPUS = 2


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


SLURM_CONF = """\
ClusterName=kittest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
PlugStackConfig={root}/plugstack.conf
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
InactiveLimit=0
KillWait=2
MinJobAge=600
GresTypes=gpu
{nodes}
PartitionName=debug Nodes={nodelist} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ)
        self.conf = root / "slurm.conf"
        self._logs: list = []

    # ---- setup -------------------------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        r.chmod(0o755)
        for d in ("state", "log", "dev", *[f"spool/{n}" for n in NODES]):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        for i in range(GPUS):
            dev = r / "dev" / f"nvidia{i}"
            if not dev.exists():
                dev.symlink_to("/dev/null")   # gres/gpu wants character devices
        ctld_port, slurmd_port, *node_ports = _free_ports(2 + len(NODES))
        nodes = "\n".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={p} CPUs={CPUS} Gres=gpu:{GPUS} "
            f"State=UNKNOWN" for n, p in zip(NODES, node_ports))
        nodelist = ",".join(NODES)
        self.conf.write_text(SLURM_CONF.format(root=r, ctld_port=ctld_port, slurmd_port=slurmd_port,
                                               nodes=nodes, nodelist=nodelist))
        (r / "gres.conf").write_text(f"AutoDetect=off\nNodeName={nodelist} Name=gpu File={r}/dev/nvidia[0-{GPUS - 1}]\n")
        (r / "plugstack.conf").write_text("")
        self.env["SLURM_CONF"] = str(self.conf)

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self._logs.append(log)
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        self.procs.append((name, p))
        return p

    def _wait(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}\n{self.logs()}")
            if check():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def start(self, timeout: float = 60) -> LocalSlurm:
        self.write_config()
        r = self.root
        sock = r / "munge.sock"
        self._start("munged", ["munged", "-F", "--force", f"--key-file={r}/munge.key", f"--socket={sock}",
                               f"--pid-file={r}/munged.pid", f"--log-file={r}/log/munged.log",
                               f"--seed-file={r}/munged.seed", "--num-threads=2"])
        self._wait("munged", lambda: subprocess.run(["munge", "-n", "-S", str(sock)], capture_output=True)
                   .returncode == 0, timeout)
        self._start("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        for n in NODES:
            self._start(f"slurmd-{n}", ["slurmd", "-D", "-N", n, "-f", str(self.conf)])
        self._wait("both nodes idle", self.nodes_idle, timeout)
        return self

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr or r.stdout}")
        return r

    def nodes_idle(self) -> bool:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
        states = dict(line.split() for line in r.stdout.splitlines() if len(line.split()) == 2)
        return all(states.get(n) == "idle" for n in NODES)

    # ---- jobs --------------------------------------------------------------------------------------------
    def job_info(self, job_id: str) -> dict[str, str]:
        r = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout))

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, str]:
        info: dict[str, str] = {}

        def done() -> bool:
            nonlocal info
            info = self.job_info(job_id)
            return info.get("JobState") in TERMINAL

        self._wait(f"job {job_id} to end", done, timeout)
        return info

    # ---- teardown ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        if any(name == "slurmctld" and p.poll() is None for name, p in self.procs):
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, env=self.env, timeout=30)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                q = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env,
                                   timeout=30)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.3)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for f in self._logs:
            f.close()

    def logs(self, tail: int = 15) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()
            lines = [ln for ln in lines if "pmix" not in ln.lower()]
            out.append(f"--- {f.name}\n" + "\n".join(lines[-tail:]))
        return "\n".join(out)


def slurm_missing() -> Optional[str]:
    for tool in ("slurmctld", "slurmd", "sbatch", "munged", "munge"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (CI installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    return None
