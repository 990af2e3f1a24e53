"""Root and the user behind it: who to become, giving root up, and files opened as that user.

The dumpcap / ``tcpdump -Z`` model: only the capture agent keeps root.  The
process that parses packets becomes the person behind ``sudo`` (``SUDO_UID``),
the ``-Z USER`` given, or ``nobody`` at a root shell, before it reads a byte of
the stream; ``-w`` is opened with that user's rights, so root never creates,
truncates or follows a link on their behalf.
"""

from __future__ import annotations

import os
import pwd
import signal
from typing import BinaryIO

from tracer.errors import CaptureError

CAP_NET_RAW = 13
# (uid, gid, user name or None): someone to become
User = tuple[int, int, "str | None"]


def has_cap_net_raw() -> bool:
    """CAP_NET_RAW in the effective set (root without it, e.g. in a locked-down
    container, cannot capture either)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def target_user(user: str | None) -> tuple[int, int, str | None] | None:
    """(uid, gid, name) to become after the agent is running; None: stay as we are."""
    if os.geteuid() != 0:
        return None
    if user is not None:
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise CaptureError(f"-Z {user}: no such user", 2) from None
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    sudo_uid = os.environ.get("SUDO_UID")
    if sudo_uid and sudo_uid.isdigit():
        uid = int(sudo_uid)
        gid = int(os.environ.get("SUDO_GID", "") or uid)
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        return uid, gid, name
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid, None
    except KeyError:
        return 65534, 65534, None


def drop_privileges(who: tuple[int, int, str | None]) -> None:
    uid, gid, name = who
    if uid == 0:
        return  # -Z root: asked for
    if name is not None:
        try:
            os.initgroups(name, gid)
        except OSError:
            os.setgroups([])
    else:
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid):  # pragma: no cover - the kernel said yes
        raise CaptureError("could not give up root")
    # as sudo -H would: tools started from here on (ssh, kubectl, docker in --via) read
    # the user's own ~/.kube, ~/.docker, not root's
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return
    os.environ.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)


def open_output(path: str, who: tuple[int, int, str | None] | None) -> BinaryIO:
    """``-w FILE``, opened with the rights of the user we become (like ``tcpdump -Z``):
    root never creates, truncates or follows a symlink to a file on the user's
    behalf.  A forked child gives up root, opens the file and hands the descriptor
    back over a socketpair, so an unwritable path still fails before the agent
    starts.  ``who`` None (not root, or staying root): opened as we are."""
    if who is None or who[0] == 0:
        try:
            return open(path, "wb", buffering=0)
        except OSError as e:
            raise CaptureError(f"{path}: cannot write ({e.strerror or e})") from None
    import socket

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            # Ctrl-C must end an open() that blocks (a FIFO nobody reads): not our handlers
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            parent.close()
            drop_privileges(who)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            socket.send_fds(child, [b"ok"], [fd])
        except OSError as e:
            try:
                child.send(b"err" + (e.strerror or str(e)).encode(errors="replace"))
            except OSError:
                pass
            code = 1
        except BaseException as e:  # noqa: BLE001 - e.g. CaptureError from drop_privileges: say what
            try:
                child.send(b"err" + str(e).encode(errors="replace"))
            except OSError:
                pass
            code = 1
        finally:
            os._exit(code)
    child.close()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(parent, 4096, 1)
    except OSError as e:
        msg, fds = b"err" + str(e).encode(), []
    finally:
        parent.close()
        os.waitpid(pid, 0)
    user = who[2] or f"uid {who[0]}"
    if not fds:
        why = msg[3:].decode(errors="replace") if msg.startswith(b"err") else "no answer"
        raise CaptureError(
            f"{path}: cannot write as {user} ({why}); tracer writes -w files as the user "
            "it runs as after giving up root, like tcpdump -Z"
        )
    os.set_inheritable(fds[0], False)  # SCM_RIGHTS does not carry close-on-exec
    return open(fds[0], "wb", buffering=0)
