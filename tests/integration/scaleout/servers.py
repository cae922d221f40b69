"""Real scale-out components for the tests: PostgreSQL standbys, pgbouncer, Redis.

Everything runs on free loopback ports in temporary directories and is removed at the
end. PostgreSQL tools run as the ``postgres`` OS user when the tests run as root.
The main cluster's data is never touched: its only change is an HBA line allowing
replication connections from 127.0.0.1 (added once, when missing, and reloaded).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, pid_alive

MAIN_HOST = "127.0.0.1"
MAIN_PORT = int(os.environ.get("ASYNCDB_TEST_POSTGRES_PORT", "5432"))
HBA_LINE = "host replication all 127.0.0.1/32 trust"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true, where the scale-out tests must run."""
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true the scale-out tests must run (see .ci/run).")
    pytest.skip(f"{reason}; deselect with -m 'not scaleout'.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((MAIN_HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((MAIN_HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.iterdir(), key=lambda p: int(p.name)) if root.is_dir() else []
    for version in reversed(versions):
        if (version / "bin" / "pg_ctl").exists():
            return version / "bin"
    found = shutil.which("pg_ctl")
    if found is None:
        unavailable("pg_ctl and pg_basebackup are not installed")
    return Path(str(found)).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def run(cmd: list[str], *, as_postgres: bool = True, timeout: float = 120.0) -> str:
    full = _as_postgres(cmd) if as_postgres else cmd
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    return done.stdout


def private_dir(prefix: str) -> Path:
    """A temporary directory the postgres OS user owns (``owner.pid``: this process)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / "owner.pid").write_text(str(os.getpid()))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def psql(port: int, sql: str, db: str = "postgres") -> str:
    cmd = ["psql", "-X", "-h", MAIN_HOST, "-p", str(port), "-U", "postgres", "-d", db]
    return run([*cmd, "-Atqc", sql], as_postgres=False).strip()


def ensure_replication_hba() -> None:
    """Let 127.0.0.1 open replication connections to the main cluster (idempotent)."""
    query = "SELECT count(*) FROM pg_hba_file_rules WHERE 'replication' = ANY(database)"
    if int(psql(MAIN_PORT, query)) > 0:
        return
    hba = Path(psql(MAIN_PORT, "SHOW hba_file"))
    if not os.access(hba, os.W_OK):
        unavailable(f"the main cluster allows no replication connections; add '{HBA_LINE}'")
    with hba.open("a") as handle:
        handle.write(f"\n# added by the asyncdb scale-out tests\n{HBA_LINE}\n")
    psql(MAIN_PORT, "SELECT pg_reload_conf()")


#: Temporary directories of the servers below; each holds ``owner.pid``, the test process
#: that made it, so a later run can remove what a killed run left (see reap_orphans).
_PREFIXES = ("asyncdb-standby-", "asyncdb-primary-", "asyncdb-failover-")
#: Physical replication slots of the test standbys: ``asyncdb_standby_<owner pid>_<port>``.
SLOT_PREFIX = "asyncdb_standby_"


def reap_orphans() -> None:
    """Stop and remove the servers, and drop the main cluster's standby slots, of test
    processes that are gone (a killed run): an orphan standby keeps a WAL sender busy, an
    orphan slot keeps WAL on the main cluster forever."""
    for root in Path(tempfile.gettempdir()).iterdir():
        if not root.name.startswith(_PREFIXES):
            continue
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # made by an older run, or being made: not ours to judge
        if not pid_alive(owner):
            PgServer(root, 0).remove()
    slots = psql(
        MAIN_PORT,
        f"SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{SLOT_PREFIX}%' "
        "AND NOT active",
    )
    for slot in slots.split():
        owner_text = slot.removeprefix(SLOT_PREFIX).split("_")[0]
        if owner_text.isdigit() and not pid_alive(int(owner_text)):
            drop_slot(MAIN_PORT, slot)


def drop_slot(port: int, slot: str) -> None:
    with contextlib.suppress(RuntimeError):
        psql(
            port,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE slot_name = '{slot}'",
        )


class PgServer:
    """A throwaway PostgreSQL server in a temporary directory."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.bin = pg_bin()
        #: A standby's replication slot on its source: (source port, slot name).
        self.slot: tuple[int, str] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{MAIN_HOST}:{self.port}/{database}"

    def configure(self) -> None:
        conf = f"""
port = {self.port}
listen_addresses = '{MAIN_HOST}'
unix_socket_directories = '{self.root}'
max_connections = 200
shared_buffers = 32MB
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
# a standby session holding a lock on a table the primary drops (reset_schema between
# tests) is cancelled after 10 s; with -1 replay waited for it forever
max_standby_streaming_delay = 10s
logging_collector = off
"""
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n" + HBA_LINE + "\n"
        for name, content in (
            ("postgresql.conf", conf),
            ("pg_hba.conf", hba),
            ("pg_ident.conf", ""),
        ):
            path = self.root / name
            path.write_text(content)
            if os.geteuid() == 0:
                entry = pwd.getpwnam("postgres")
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # The server reads its configuration from the data directory.
        run(["cp", str(self.root / "postgresql.conf"), str(self.data / "postgresql.conf")])
        run(["cp", str(self.root / "pg_hba.conf"), str(self.data / "pg_hba.conf")])
        run(["cp", str(self.root / "pg_ident.conf"), str(self.data / "pg_ident.conf")])

    def start(self) -> None:
        log = str(self.root / "server.log")
        run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def promote(self) -> None:
        run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "promote"])

    def sql(self, statement: str, db: str = "postgres") -> str:
        return psql(self.port, statement, db)

    def remove(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        if self.slot is not None:
            drop_slot(*self.slot)
        shutil.rmtree(self.root, ignore_errors=True)


def standby_of(source_port: int, prefix: str = "asyncdb-standby-") -> PgServer:
    """A streaming standby of the server on ``source_port``, started."""
    reap_orphans()
    server = PgServer(private_dir(prefix), free_port())
    try:
        _basebackup(server, source_port)
    except BaseException:
        server.remove()
        raise
    return server


def _basebackup(server: PgServer, source_port: int, attempts: int = 3) -> None:
    # The standby streams through a replication slot of its own (-C -S; -R writes
    # primary_slot_name), so the source keeps every WAL segment the standby has not
    # received yet: without one, a standby that fell behind while the suite wrote a lot
    # (bulk tests, other workers) found its next segment recycled and never caught up.
    # A checkpoint that runs while pg_basebackup sets up (DROP DATABASE forces one;
    # parallel test workers drop databases) can end the stream with "terminating
    # process ... to release replication slot": take it again.
    slot = f"{SLOT_PREFIX}{os.getpid()}_{server.port}"
    server.slot = (source_port, slot)
    for attempt in range(1, attempts + 1):
        try:
            run(
                [
                    str(server.bin / "pg_basebackup"),
                    "-h", MAIN_HOST, "-p", str(source_port), "-U", "postgres",
                    "-D", str(server.data), "-X", "stream", "-c", "fast", "-R",
                    "-C", "-S", slot,
                ]
            )  # fmt: skip
            break
        except RuntimeError:
            shutil.rmtree(server.data, ignore_errors=True)
            drop_slot(source_port, slot)
            if attempt == attempts:
                raise
    server.configure()
    server.start()


def new_primary(prefix: str = "asyncdb-primary-") -> PgServer:
    """A brand-new primary from initdb (nothing copied from the main cluster), started."""
    server = PgServer(private_dir(prefix), free_port())
    run([str(server.bin / "initdb"), "-D", str(server.data), "-U", "postgres", "-N", "-A", "trust"])
    server.configure()
    server.start()
    return server


def wait_replayed(primary_port: int, standby: PgServer, timeout: float = 120.0) -> None:
    """Return once ``standby`` replayed everything ``primary_port`` has written so far."""
    lsn = psql(primary_port, "SELECT pg_current_wal_lsn()")
    query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
    deadline = time.monotonic() + timeout
    while standby.sql(query) != "t":
        if time.monotonic() > deadline:
            msg = f"the standby on port {standby.port} did not replay up to {lsn}"
            raise TimeoutError(msg)
        time.sleep(0.02)


# -- pgbouncer and Redis -----------------------------------------------------------------


@contextlib.contextmanager
def pgbouncer(pool_size: int = 5) -> Iterator[int]:
    """pgbouncer in transaction mode in front of the main cluster; yields its port."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        unavailable("pgbouncer is not installed (apt-get install -y pgbouncer)")
    root = private_dir("asyncdb-pgbouncer-")
    port = free_port()
    ini = root / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={MAIN_HOST} port={MAIN_PORT}

[pgbouncer]
listen_addr = {MAIN_HOST}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_db_connections = {pool_size}
max_client_conn = 1000
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
"""
    )
    (root / "userlist.txt").write_text('"postgres" ""\n')
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (ini, root / "userlist.txt"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    # pgbouncer drops root itself (-u), so the signal below reaches it directly.
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *user, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


class RedisServer:
    """A private redis-server on a free port (so a test may kill it)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = str(binary)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{MAIN_HOST}:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", MAIN_HOST, "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
