"""The model registry: versions registered all or nothing, aliases, and the promotion lock."""

import contextlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from .. import stopping
from ..errors import ConfigError
from .process import HOST_TAG, PID_TAG, SINCE_TAG, gone, this_process
from .store import configure

log = logging.getLogger(__name__)


def register_model(model_uri: str, name: str, tags: Mapping[str, object] | None = None,
                   alias: str | None = None) -> int:
    """Register `model_uri` as a new version of `name` with its `tags` (one request) and, if
    given, point `alias` (e.g. candidate) at it; returns the version. The version @alias held
    before is recorded on the new one (REPLACED_TAG), so that deleting the new version, should
    its run fail, gives the alias back."""
    stopping.checkpoint()  # SIGTERM during a step's last evaluation: its run ends KILLED, nothing registered
    client = MlflowClient()
    tags = {k: str(v) for k, v in (tags or {}).items()}
    if alias:
        before = model_aliases(name).get(alias)
        tags[REPLACED_TAG] = f"{alias}={before if before is not None else 'none'}"
    with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints "Created version ..." itself
        version = mlflow.register_model(model_uri, name, tags=tags)
    log.debug(said.getvalue().strip())
    try:
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except BaseException:
        # Interrupted half-way (a signal, a lost server): no version without its alias.
        _delete_version(client, name, version.version, "its registration was cut short")
        raise
    return int(version.version)


REPLACED_TAG = "medrobust.replaced_alias"  # "<alias>=<version it held before, or none>"


def _delete_version(client, name, version, reason):
    """Delete a version, giving back the alias it took from another (REPLACED_TAG); a failure
    is logged, never raised over the exception that called for it."""
    try:
        replaced = client.get_model_version(name, str(version)).tags.get(REPLACED_TAG, "")
        alias, _, before = replaced.partition("=")
        client.delete_model_version(name, str(version))
        if alias and before not in ("", "none") and alias not in model_aliases(name):
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # that version is gone too
                client.set_registered_model_alias(name, alias, before)
        log.warning("%s v%s deleted: %s%s", name, version, reason,
                    f"; @{alias} is v{before} again" if alias and before not in ("", "none") else "")
        return True
    except Exception as e:  # noqa: BLE001
        log.warning("%s v%s could not be deleted (%s); the next command tries again", name, version, e)
        return False


def model_versions(name: str) -> list[dict[str, Any]]:
    """[{'version', 'run_id', 'tags'}] of a registered model, oldest first; [] if it does not exist."""
    configure()
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return []
    return sorted(
        ({"version": int(v.version), "run_id": v.run_id, "tags": dict(v.tags)} for v in versions),
        key=lambda v: v["version"],
    )


def registered_version(model_uri: str) -> tuple[str, int] | None:
    """(name, version) of a models:/<name>/<version> or models:/<name>@<alias> URI; None for
    any other URI (runs:/..., a path) or one that names no version."""
    if not str(model_uri).startswith("models:/"):
        return None
    configure()
    client = MlflowClient()
    rest = str(model_uri)[len("models:/"):]
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return name, int(client.get_model_version_by_alias(name, alias).version)
        name, _, version = rest.partition("/")
        return (name, int(version)) if version.isdigit() else None
    except mlflow.exceptions.MlflowException:
        return None


def pinned_uri(model_uri: str) -> str:
    """models:/<name>/<version> for a models:/<name>@<alias> URI (an alias moves; a record of
    where a model came from must not); any other URI as it is."""
    found = registered_version(model_uri) if "@" in str(model_uri) else None
    return f"models:/{found[0]}/{found[1]}" if found else model_uri


def tag_model_version(model_uri: str, tags: Mapping[str, object]) -> tuple[str, int] | None:
    """Set tags on the registered version a models:/ URI points to; returns (name, version) or
    None when the URI names no registered version (nothing is tagged then)."""
    found = registered_version(model_uri)
    if found:
        for key, value in tags.items():
            MlflowClient().set_model_version_tag(found[0], str(found[1]), key, str(value))
    return found


def model_version_tags(model_uri: str) -> dict[str, str]:
    """{tag: value} of the registered version a models:/ URI points to; {} for any other URI."""
    found = registered_version(model_uri)
    if not found:
        return {}
    return dict(MlflowClient().get_model_version(found[0], str(found[1])).tags)


def set_alias(name: str, alias: str, version: int) -> None:
    """Point `alias` of registered model `name` at `version` (moving it from any other)."""
    configure()
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def model_aliases(name: str) -> dict[str, int]:
    """{alias: version} of a registered model; {} if it does not exist."""
    configure()
    try:
        model = MlflowClient().get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        return {}
    return {alias: int(version) for alias, version in model.aliases.items()}


def delete_versions_of_runs(run_ids: Iterable[str], *, reason: str) -> list[tuple[str, int]]:
    """Delete every registered version logged by one of `run_ids` (a run that failed or was
    killed registers nothing), one log line each; returns [(name, version)]."""
    run_ids = sorted(set(run_ids))
    if not run_ids:
        return []
    client = MlflowClient()
    listed = ", ".join(f"'{r}'" for r in run_ids)
    return [(v.name, int(v.version)) for v in client.search_model_versions(f"run_id IN ({listed})")
            if _delete_version(client, v.name, v.version, reason)]


def delete_unfinished_versions() -> list[tuple[str, int]]:
    """Delete the versions whose run ended FAILED or KILLED: a process killed (kill -9) after
    registering and before its run finished leaves such a version READY, and only a version of
    a finished run may be used. Returns [(name, version)]."""
    client = MlflowClient()
    runs = sorted({v.run_id for v in client.search_model_versions("", max_results=10000) if v.run_id})
    if not runs:
        return []
    experiments = [e.experiment_id for e in client.search_experiments()]
    stopped = []
    for chunk in range(0, len(runs), 100):  # a bounded IN list per query
        listed = ", ".join(f"'{r}'" for r in runs[chunk:chunk + 100])
        for status in ("FAILED", "KILLED"):  # MLflow's filter compares a status with one value
            stopped += [r.info.run_id for r in client.search_runs(
                experiments, f"attributes.run_id IN ({listed}) and attributes.status = '{status}'", max_results=1000)]
    return delete_versions_of_runs(stopped, reason="its run did not finish (failed or killed)")


# The promotion lock on registered model <name> is a registered model of its own, <name> + LOCK:
# creating a registered model is atomic and refused when it exists, on SQLite, on PostgreSQL
# and through `mlflow server` alike, which no tag write is. Its tags name the holder (with a
# token of its own, so that nobody but the holder, or whoever recovers it from a dead holder,
# removes it), a heartbeat, and, while it moves aliases, the move (INTENT_TAG), so a later
# command can undo a move cut half-way by a kill.
LOCK = ".promote-lock"
INTENT_TAG, TOKEN_TAG, OWNER_TAG = "medrobust.promote_intent", "medrobust.lock_token", "medrobust.owner_run"
# A holder on another host cannot be checked for life: its lock is taken over once its
# heartbeat (every HEARTBEAT_S) has been silent this long.
LOCK_TTL_S, HEARTBEAT_S = 600.0, 30.0
# What a refused create or a vanished lock reports while another command takes or frees it.
_CONTENDED = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "TEMPORARILY_UNAVAILABLE")


@contextlib.contextmanager
def promotion_lock(name: str, *, owner: str, wait_s: float = 900.0,
                   poll_s: float = 0.5) -> Iterator[Callable[[int, str, str], int | None]]:
    """Hold the promotion lock of registered model `name` for the run `owner`: a second
    promote waits for it (up to `wait_s` seconds, then ConfigError naming the holder). A lock
    whose holder was killed is recovered first (recover_promotion). Yields a move(version,
    alias, previous_alias) function: the checked alias transaction."""
    configure()
    client = MlflowClient()
    lock = name + LOCK
    mine = this_process() | {OWNER_TAG: owner, TOKEN_TAG: uuid.uuid4().hex}
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            client.create_registered_model(lock, tags=mine, description=f"promote run {owner} is moving the "
                                                                          f"aliases of {name}")
            break
        except mlflow.exceptions.MlflowException as e:
            if e.error_code not in _CONTENDED:
                raise
        holder = _holder(client, lock)
        if holder is not None and recover_promotion(client, name, holder):
            continue
        if time.monotonic() > deadline:
            holder = holder or {}
            raise ConfigError(f"{name} is being promoted by run {holder.get(OWNER_TAG)} (process "
                              f"{holder.get(PID_TAG)} on {holder.get(HOST_TAG)}); waited {wait_s:.0f} s for its lock "
                              f"({lock}); try again when it has finished")
        if holder is not None and not said:
            log.info("promote: waiting for run %s, which is promoting a version of %s", holder.get(OWNER_TAG), name)
            said = True
        time.sleep(poll_s)
    beating = threading.Event()
    threading.Thread(target=_heartbeat, args=(lock, beating), daemon=True).start()
    try:
        yield lambda version, alias, previous_alias: _move(client, name, version, alias, previous_alias)
    except BaseException:
        # Interrupted (a signal, a lost server) with a move recorded: undo it now; if that is
        # cut too, the lock and its intent stay for the next command to undo. A failure here
        # is logged: the exception that stopped the promote is the one raised.
        beating.set()
        try:
            holder = _holder(client, lock)
            if holder is not None and holder.get(TOKEN_TAG) == mine[TOKEN_TAG]:
                if INTENT_TAG in holder:
                    _undo(client, name, json.loads(holder[INTENT_TAG]))
                client.delete_registered_model(lock)
        except Exception as e:  # noqa: BLE001
            log.warning("%s: could not undo or release the promotion lock (%s); the next command will", name, e)
        raise
    beating.set()
    holder = _holder(client, lock)
    if holder is not None and holder.get(TOKEN_TAG) == mine[TOKEN_TAG]:
        client.delete_registered_model(lock)
    else:
        log.warning("%s: the promotion lock was taken over while this promote held it", name)


def _heartbeat(lock, stop):
    """Refresh the lock's time every HEARTBEAT_S until `stop`: a holder on another host is
    taken for dead only when this stops (a gate may evaluate for hours)."""
    client = MlflowClient()
    while not stop.wait(HEARTBEAT_S):
        try:
            client.set_registered_model_tag(lock, SINCE_TAG, f"{time.time():.3f}")
        except Exception as e:  # noqa: BLE001 - a busy store: the next beat tries again
            log.debug("promotion lock heartbeat: %s", e)


def lock_holder(name: str) -> dict[str, str] | None:
    """The tags of the process holding `name`'s promotion lock; None when nobody holds it."""
    configure()
    return _holder(MlflowClient(), name + LOCK)


def _holder(client, lock):
    """The lock's tags; None when it vanished (released between our attempt and this read)."""
    try:
        return dict(client.get_registered_model(lock).tags)
    except mlflow.exceptions.MlflowException:
        return None


def _move(client, name, version, alias, previous_alias):
    """Point @alias at `version` and @previous_alias at the version @alias held, re-read under
    the lock; the intent is recorded on the lock first. Returns the version @alias held."""
    aliases = model_aliases(name)
    current = aliases.get(alias)
    if current == version:
        return current
    intent = {"version": version, "before": {alias: current, previous_alias: aliases.get(previous_alias)}}
    client.set_registered_model_tag(name + LOCK, INTENT_TAG, json.dumps(intent))
    client.set_registered_model_alias(name, alias, str(version))
    if current is not None:
        client.set_registered_model_alias(name, previous_alias, str(current))
    client.delete_registered_model_tag(name + LOCK, INTENT_TAG)
    return current


def _undo(client, name, intent):
    """Put the aliases back as they were before a move that was cut half-way (a version deleted
    since is left out)."""
    for alias, version in intent["before"].items():
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            if version is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, str(version))
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.set_model_version_tag(name, str(intent["version"]), "gate_result", "interrupted")
    log.warning("%s: a promotion of v%s was cut between its alias moves; undone (%s)", name, intent["version"],
                ", ".join(f"@{a} = v{v}" if v is not None else f"no @{a}" for a, v in intent["before"].items()))


def recover_promotion(client: MlflowClient, name: str, holder: Mapping[str, str]) -> bool:
    """If the holder of `name`'s promotion lock is gone (killed), undo its recorded move and
    remove the lock; returns whether it did. Two commands recovering at once: the lock is
    first renamed to one named by the dead holder's token, which only one of them can do, so
    only that one undoes and deletes, and a live holder's new lock is never touched."""
    if not gone(holder, ttl_s=LOCK_TTL_S):
        return False
    claimed = f"{name}{LOCK}.recovering-{holder.get(TOKEN_TAG, 'none')}"
    try:
        client.rename_registered_model(name + LOCK, claimed)
    except mlflow.exceptions.MlflowException:
        return True  # another command claimed it (or it is gone): look again
    found = _holder(client, claimed)
    if found is None or found.get(TOKEN_TAG) != holder.get(TOKEN_TAG):  # not the lock we judged dead
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.rename_registered_model(claimed, name + LOCK)
        return True
    if INTENT_TAG in found:
        _undo(client, name, json.loads(found[INTENT_TAG]))
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.delete_registered_model(claimed)
    log.warning("%s: removed the promotion lock of run %s, whose process %s on %s is gone", name,
                found.get(OWNER_TAG), found.get(PID_TAG), found.get(HOST_TAG))
    return True


def recover_promotions() -> None:
    """recover_promotion for every promotion lock in the store (a lock left mid-recovery by a
    command killed then is finished too)."""
    client = MlflowClient()
    for model in client.search_registered_models(f"name LIKE '%{LOCK}%'"):
        name, _, rest = model.name.partition(LOCK)
        tags = dict(model.tags)
        if not rest:
            recover_promotion(client, name, tags)
        elif gone(tags, ttl_s=LOCK_TTL_S):  # claimed by a recovery that was itself killed
            if INTENT_TAG in tags:
                _undo(client, name, json.loads(tags[INTENT_TAG]))
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model(model.name)
