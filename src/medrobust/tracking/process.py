"""Which process holds a run or a lock: tags that let a later command tell a live holder from
one that was killed (kill -9, a lost machine)."""

import os
import socket
import time
from collections.abc import Mapping

HOST_TAG, PID_TAG, SINCE_TAG = "medrobust.host", "medrobust.pid", "medrobust.since"


def this_process() -> dict[str, str]:
    """{tag: value} naming this process and the time (Unix seconds) the tags were made."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), SINCE_TAG: f"{time.time():.3f}"}


def alive(pid: int) -> bool:
    """Whether process `pid` of this host runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def gone(tags: Mapping[str, str], *, ttl_s: float) -> bool:
    """Whether the holder named by `tags` (this_process()) is gone: a process of this host that
    no longer runs, or, on another host, where its process cannot be checked, tags older than
    `ttl_s` seconds."""
    pid = int(tags.get(PID_TAG, "0") or 0)
    if tags.get(HOST_TAG) == socket.gethostname():
        return pid != os.getpid() and not alive(pid)
    return time.time() - float(tags.get(SINCE_TAG, "0") or 0) > ttl_s
