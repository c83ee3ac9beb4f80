"""A real single-node SLURM for the tests: munged, slurmctld and slurmd started here, stopped by pid.

The Debian packages ``slurm-wlm`` and ``munge`` provide the daemons (``.ci/run`` installs them
where ``sbatch`` is missing). :func:`start` writes a minimal ``slurm.conf`` (this host as the
controller and the only node, ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres``)
into a fresh folder, starts ``munged`` as the ``munge`` user and both SLURM daemons as root,
and waits until the node is idle; :meth:`Cluster.stop` stops the three processes it started.
Commands reach it through ``SLURM_CONF`` (:attr:`Cluster.env`).

Example::

    cluster = start()                    # raises Unavailable(reason) where SLURM cannot run
    subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)
    cluster.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import process_alive


class Unavailable(Exception):
    """SLURM cannot be started here; the message says why."""


@dataclass
class Cluster:
    folder: Path
    env: dict
    pids: dict[str, int] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> str:
        """A SLURM command (``scontrol``, ``squeue`` ...) against this cluster; its stdout."""
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {r.stdout}{r.stderr}")
        return r.stdout

    def job_state(self, job: str) -> str:
        """``PENDING``, ``RUNNING``, ``COMPLETED`` ... of one job or array task (``123_0``)."""
        out = self.run("scontrol", "-o", "show", "job", job, check=False)
        for item in out.split():
            if item.startswith("JobState="):
                return item.split("=", 1)[1]
        return "UNKNOWN"

    def jobs(self) -> list[str]:
        """Every job the controller still knows (pending, running or recently ended), as ``JobId`` strings."""
        out = self.run("scontrol", "-o", "show", "jobs", check=False)
        return [item.split("=", 1)[1] for line in out.splitlines() for item in line.split()
                if item.startswith("JobId=")]

    def wait_idle(self, timeout: float = 300) -> None:
        """Until no job is pending or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h", "-o", "%i %T", check=False).strip():
                return
            time.sleep(0.5)
        raise TimeoutError(f"SLURM jobs still queued after {timeout} s:\n" + self.run("squeue", check=False))

    def stop(self) -> None:
        """SIGTERM to the daemons started here (by pid), SIGKILL to any still alive after 10 s."""
        pids = [self.pids.pop(name) for name in ("slurmd", "slurmctld", "munged") if name in self.pids]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and any(process_alive(pid) for pid in pids):
            time.sleep(0.05)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_pid(path: Path, timeout: float = 10) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise Unavailable(f"{path} did not appear: the daemon did not start")


def slurm_conf(folder: Path, host: str, cpus: int) -> str:
    ports = _free_port(), _free_port()
    return "\n".join([
        "ClusterName=reidtest",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={folder / 'munge' / 'munge.socket'}",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobCompType=jobcomp/none",
        "AccountingStorageType=accounting_storage/none",
        "KillWait=30",
        "MinJobAge=600",
        "SlurmdParameters=config_overrides",
        f"NodeName={host} CPUs={cpus} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start(cpus: int = 4) -> Cluster:
    """Start munged, slurmctld and slurmd on this host; raise :class:`Unavailable` saying why it cannot."""
    missing = [p for p in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(p) is None
               and not Path("/usr/sbin", p).exists()]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed (Debian packages slurm-wlm and munge)")
    if os.geteuid() != 0:
        raise Unavailable("slurmd and slurmctld must run as root, and the tests do not")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        raise Unavailable("no munge user (install the munge package)") from None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        raise Unavailable(f"{key} is missing (the munge package creates it)")
    folder = Path(tempfile.mkdtemp(prefix="reid-slurm-"))
    os.chmod(folder, 0o755)
    munge_dir = folder / "munge"
    munge_dir.mkdir(mode=0o755)
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    for d in ("state", "spool"):
        (folder / d).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, cpus))
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = Cluster(folder, env)
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"  # noqa: E731
    try:
        subprocess.run(["runuser", "-u", "munge", "--", sbin("munged"), f"--socket={munge_dir / 'munge.socket'}",
                        f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                        f"--seed-file={munge_dir / 'munged.seed'}", f"--key-file={key}"],
                       check=True, capture_output=True, text=True, timeout=30)
        cluster.pids["munged"] = _read_pid(munge_dir / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([sbin(daemon), "-f", str(conf)], env=env, check=True, capture_output=True, text=True,
                           timeout=30)
            cluster.pids[daemon] = _read_pid(folder / f"{daemon}.pid")
        deadline = time.time() + 30
        while cluster.run("sinfo", "-h", "-o", "%T", check=False).strip() not in ("idle",):
            if time.time() > deadline:
                raise Unavailable("the node did not become idle within 30 s:\n" + cluster.run("sinfo", check=False)
                                  + _tail(folder / "slurmd.log") + _tail(folder / "slurmctld.log"))
            time.sleep(0.1)
    except subprocess.CalledProcessError as e:
        cluster.stop()
        raise Unavailable(f"{' '.join(map(str, e.cmd[:1]))} did not start: {(e.stderr or e.stdout or '').strip()}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _tail(path: Path) -> str:
    try:
        return "\n" + "\n".join(path.read_text().splitlines()[-10:])
    except OSError:
        return ""
