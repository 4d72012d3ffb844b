"""One run at a time per pipeline, and no trace of a killed run left RUNNING.

Two LocalDagRunner processes on one pipeline would write the same MLMD
store and could both decide to train and push; the second run is refused with
a message naming the process that holds the pipeline. The lock is an advisory
`flock` on `<pipeline_root>/.run.lock`: the kernel drops it when its process
ends, however it ends (SIGKILL included), so a killed run never blocks the next.
With ML Metadata on a MySQL server that several machines share, the lock is
also taken in the store itself: MySQL's named lock `GET_LOCK('fmnist:<pipeline
name>')`, held on a connection for the length of the run and dropped by the
server when that connection ends (the process killed included).

A run killed mid-component leaves its execution in MLMD in state RUNNING
forever (TFX marks executions only when they finish), and the output
directories TFX made for it (`<pipeline_root>/<node>/<output>/<execution id>/`,
empty or half-written, never published). Once the lock is held, no other run
can be alive, so such executions are marked CANCELED, with a note, and their
directories deleted, before the new run starts; the new run then reuses every
cached upstream output and redoes the interrupted component under a new
execution.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
from collections.abc import Iterator

from ml_metadata.proto import metadata_store_pb2

from core.config import PipelineConfig, is_uri
from core.errors import PipelineError
from pipeline.metadata import UNFINISHED, Metadata, store_exists

LOCK_FILE = ".run.lock"


class PipelineBusyError(PipelineError):
    """Another run holds this pipeline root."""


@contextlib.contextmanager
def exclusive_run(config: PipelineConfig) -> Iterator[None]:
    """Hold the pipeline root's lock, and the shared store's when MLMD is on MySQL; refuse if held."""
    with root_lock(config.pipeline_root), store_lock(config):
        yield


@contextlib.contextmanager
def store_lock(config: PipelineConfig) -> Iterator[None]:
    """MySQL's named lock for this pipeline, on its own connection, for the duration (nothing for SQLite)."""
    mysql = config.mysql
    if mysql is None:
        yield
        return
    import pymysql

    where = {"unix_socket": mysql.socket} if mysql.socket else {"host": mysql.host, "port": mysql.port}
    try:
        connection = pymysql.connect(
            user=mysql.user, password=mysql.password, database=mysql.database, **where
        )
    except pymysql.MySQLError as err:
        raise PipelineError(f"ML Metadata at {config.metadata_location}: cannot be reached: {err}") from None
    name = f"fmnist:{config.pipeline_name}"[:64]
    got = 0
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", (name, name))
            got, holder = cursor.fetchone()
        if got != 1:
            raise PipelineBusyError(
                f"ML Metadata at {config.metadata_location}: another run of pipeline "
                f"'{config.pipeline_name}' holds its lock '{name}' (MySQL connection {holder}); "
                "wait for it to finish"
            )
        yield
    finally:
        if got == 1:
            # Released before the run returns: closing the connection releases it too, but only when
            # the server gets round to the closed session, and a run started at once was refused.
            # A connection already lost has released it.
            with contextlib.suppress(pymysql.MySQLError), connection.cursor() as cursor:
                cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
        connection.close()


@contextlib.contextmanager
def root_lock(pipeline_root: str) -> Iterator[None]:
    """Hold `<pipeline_root>/.run.lock` for the duration; refuse at once if another run holds it.

    An object-store root has no file locks; such a pipeline keeps ML Metadata
    on MySQL (the configuration insists), whose named lock `store_lock` holds.
    """
    if is_uri(pipeline_root):
        yield
        return
    os.makedirs(pipeline_root, exist_ok=True)
    path = os.path.join(pipeline_root, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise PipelineBusyError(
                f"{path}: another run of this pipeline is in progress ({holder}); "
                "wait for it to finish, or give this run its own --workdir"
            ) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {started}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def cancel_abandoned_executions(config: PipelineConfig) -> list[str]:
    """Mark executions a killed run left NEW or RUNNING as CANCELED; return their node names.

    Call only while holding `exclusive_run`: then no live run owns them.
    """
    if not store_exists(config):
        return []
    metadata = Metadata.open(config, read_only=False)
    pipeline = metadata.pipeline_context()
    if pipeline is None:
        return []
    abandoned = [e for e in metadata.executions(pipeline.id) if e.last_known_state in UNFINISHED]
    for execution in abandoned:
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        execution.custom_properties[
            "fmnist_note"
        ].string_value = "its run ended without finishing it (process killed); canceled by the next run"
    if abandoned:
        metadata.store.put_executions(abandoned)
    for execution in abandoned:
        remove_unpublished_outputs(config.pipeline_root, metadata.node_of(execution.id), execution.id)
    return sorted(metadata.node_of(e.id) for e in abandoned)


def remove_unpublished_outputs(pipeline_root: str, node: str, execution_id: int) -> list[str]:
    """Delete what TFX made for an execution that never finished: its output and working directories.

    TFX lays them out as `<root>/<node>/<output key>/<execution id>` and
    `<root>/<node>/.system/<kind>/<execution id>`; an unfinished execution's
    outputs are never published in ML Metadata, so nothing refers to them.
    """
    import tensorflow as tf

    patterns = [
        f"{pipeline_root}/{node}/*/{execution_id}",
        f"{pipeline_root}/{node}/.system/*/{execution_id}",
    ]
    removed = [path for pattern in patterns for path in tf.io.gfile.glob(pattern)]
    for path in removed:
        tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)
    return removed
