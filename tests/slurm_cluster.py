"""A throw-away single-node Slurm cluster on this machine, for tests.

Debian's ``munge`` and Slurm 22.05 daemons (installed with apt when missing,
which needs root) run in the foreground as children of the test process,
with every file (munge key and socket, ``slurm.conf``, state, spool, logs)
under one temporary directory and all traffic on 127.0.0.1. The node is
this host (``hostname -s``) with 2 CPUs, no GPUs and no cgroups
(``proctrack/linuxproc``, ``task/none``); its one partition is
:data:`PARTITION`. Clients reach it through ``SLURM_CONF`` (:meth:`env`).
"""
import os
import pathlib
import shutil
import socket
import subprocess
import time

PACKAGES = ('munge', 'slurm-client', 'slurmctld', 'slurmd')
PROGRAMS = ('munged', 'slurmctld', 'slurmd', 'srun', 'sinfo', 'scontrol')
PARTITION = 'mmmpvg'
NODE_CPUS = 2

SLURM_CONF = '''\
ClusterName=mmmpvg-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# Use the node as configured whatever the CI machine's CPU count.
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
'''


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def _tail(path, lines=15):
    path = pathlib.Path(path)
    if not path.exists():
        return f'{path.name}: (no log)'
    text = path.read_text(errors='replace').splitlines()[-lines:]
    return f'{path.name}:\n' + '\n'.join(text)


def install_slurm():
    """Install munge and the Slurm daemons/clients with apt if missing.

    Raises:
        SlurmUnavailable: not root, no apt-get, or apt failed.
    """
    if all(shutil.which(p) for p in PROGRAMS):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            f'Slurm is not installed and installing it needs root (uid '
            f'{os.geteuid()})')
    if shutil.which('apt-get') is None:
        raise SlurmUnavailable('Slurm is not installed and there is no '
                               'apt-get to install it')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    install = ['apt-get', 'install', '-y', '--no-install-recommends',
               *PACKAGES]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # stale or missing package lists
        subprocess.run(['apt-get', 'update'], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True,
                                text=True)
    if result.returncode != 0:
        raise SlurmUnavailable(
            f'apt-get install {" ".join(PACKAGES)} failed:\n'
            f'{result.stdout[-1500:]}\n{result.stderr[-1500:]}')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged, slurmctld and slurmd for one node, all under ``root``.

    Use as a context manager; :meth:`stop` ends the daemons it started (by
    their process handles) and removes ``root``.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.host = socket.gethostname().split('.')[0]
        self.conf = self.root / 'slurm.conf'
        self.munge_socket = self.root / 'munge-run' / 'munge.socket'
        self.daemons = {}

    def env(self, base=None):
        """``base`` (default: this process's environment) with the clients
        pointed at this cluster."""
        return dict(os.environ if base is None else base,
                    SLURM_CONF=str(self.conf))

    def _write_files(self):
        for sub in ('state', 'spool', 'log', 'munge-run'):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a key or socket directory others can write to.
        key_dir = self.root / 'munge-key'
        key_dir.mkdir(mode=0o700)
        key = key_dir / 'munge.key'
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / 'munge-run').chmod(0o755)
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, root=self.root, cpus=NODE_CPUS,
            partition=PARTITION, munge_socket=self.munge_socket,
            ctld_port=_free_port(), slurmd_port=_free_port()))
        return key

    def _spawn(self, name, cmd):
        log = open(self.root / 'log' / f'{name}.out', 'w')
        self.daemons[name] = subprocess.Popen(
            [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
            env=self.env(), start_new_session=True)
        log.close()

    def _failure(self, what):
        logs = '\n'.join(
            _tail(self.root / 'log' / name) for name in (
                'munged.out', 'slurmctld.log', 'slurmctld.out',
                'slurmd.log', 'slurmd.out'))
        return SlurmUnavailable(f'{what}\n{logs}')

    def _wait(self, ready, what, timeout):
        deadline = time.monotonic() + timeout
        while not ready():
            exited = [n for n, p in self.daemons.items()
                      if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                raise self._failure(
                    f'{what}: ' + (f'{", ".join(exited)} exited' if exited
                                   else f'not ready after {timeout} s'))
            time.sleep(0.2)

    def node_state(self):
        result = subprocess.run(
            ['sinfo', '-h', '-N', '-p', PARTITION, '-o', '%T'],
            env=self.env(), capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ''

    def start(self, timeout=60):
        """Start the daemons and wait until the node is idle.

        Raises:
            SlurmUnavailable: a daemon exited or the node never became
                idle; the message holds the daemons' log tails.
        """
        key = self._write_files()
        self._spawn('munged', [
            shutil.which('munged'), '--foreground', '--force',
            f'--key-file={key}', f'--socket={self.munge_socket}',
            f'--pid-file={self.root}/munged.pid',
            f'--log-file={self.root}/log/munged.log',
            f'--seed-file={self.root}/munge-run/munged.seed'])
        self._wait(self.munge_socket.exists, 'munged', timeout)
        self._spawn('slurmctld',
                    [shutil.which('slurmctld'), '-D', '-f', self.conf])
        self._spawn('slurmd', [shutil.which('slurmd'), '-D', '-f', self.conf,
                               '-N', self.host])
        self._wait(lambda: self.node_state() == 'idle',
                   f'node {self.host} idle in partition {PARTITION}', timeout)
        return self

    def stop(self):
        """End the daemons (slurmd first, munged last) and remove ``root``.
        """
        for name in ('slurmd', 'slurmctld', 'munged'):
            process = self.daemons.pop(name, None)
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
