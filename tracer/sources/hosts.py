"""The hosts of ``tracer live --host NAME=URL``: how they are named, reached and asked.

Each host is reached with a tool the operator already trusts, never a protocol
of our own: ``ssh://[user@]host[:port]`` or a bare ssh destination (the user's
own OpenSSH, ``BatchMode=yes``, their config, agent and known_hosts; host keys
are always checked), ``--via 'COMMAND {host}'`` (any command prefix: ``ip netns
exec {host}``, ``kubectl exec -n kube-system {host} --``, ``docker exec {host}``)
or ``local`` (this machine).  On each host a short *probe* finds ``tracer`` and
``tcpdump``; then ``sudo -n tracer agent`` runs there, or ``sudo -n tcpdump`` per
NIC where tracer is not installed (the NICs from ``ip -d -j addr``, see
:func:`tracer.net.discovery.links_from_ip`).  This module builds those command
lines and reads the probe's answer; :mod:`tracer.sources.remote` runs them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass

from tracer.errors import CaptureError

SSH_OPTIONS = [
    "-T",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
]
HOST_NAME_OK = re.compile(r"^[A-Za-z0-9_.:@+-]+$")

# -- what the user typed ---------------------------------------------------------------


@dataclass
class HostSpec:
    name: str
    method: str  # "ssh", "via" or "local"
    target: str = ""  # ssh destination, or what replaces {host} in --via
    port: int | None = None


def is_remote_arg(value: str) -> bool:
    """``--host NAME=URL`` (a host to capture on) vs ``--host NAME`` (this machine's name)."""
    return "=" in value


def parse_host(arg: str, via: str | None = None) -> HostSpec:
    name, _, url = arg.partition("=")
    if not name or not url:
        raise CaptureError(
            f"--host {arg}: expected NAME=URL (ssh://[user@]host[:port], local, or what --via's {{host}} becomes)", 2
        )
    if not HOST_NAME_OK.match(name):
        raise CaptureError(f"--host {arg}: the name may only have letters, digits and _.:@+-", 2)
    if url == "local":
        return HostSpec(name, "local")
    if url.startswith("ssh://"):
        rest = url[len("ssh://") :].rstrip("/")
        port = None
        m = re.match(r"^(.*?)(?::(\d+))?$", rest)
        if m and m.group(2):
            rest, port = m.group(1), int(m.group(2))
        if not rest or "/" in rest or rest.startswith("-"):
            raise CaptureError(f"--host {arg}: not an ssh://[user@]host[:port] URL", 2)
        return HostSpec(name, "ssh", rest, port)
    if "://" in url:
        raise CaptureError(f"--host {arg}: unknown scheme (ssh://..., local, or --via)", 2)
    if via:
        return HostSpec(name, "via", url)
    if url.startswith("-"):
        raise CaptureError(f"--host {arg}: not an ssh destination", 2)
    return HostSpec(name, "ssh", url)


# -- commands --------------------------------------------------------------------------

_PRELUDE = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; if [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi; '

PROBE = (
    _PRELUDE
    + r"""
echo "uid=$(id -u)"
t=$(command -v tracer 2>/dev/null)
echo "tracer=$t"
echo "tcpdump=$(command -v tcpdump 2>/dev/null)"
if [ -n "$t" ]; then
  echo "agent_options=$("$t" agent --help 2>/dev/null | grep -o -e '--[a-z][a-z-]*' | sort -u | tr '\n' ' ')"
fi
echo "== links"
ip -d -j addr show 2>/dev/null || echo "[]"
echo "== routes"
ip -j route show default 2>/dev/null || echo "[]"
for ns in "$@"; do
  echo "== links $ns"; $S ip -n "$ns" -d -j addr show 2>/dev/null || echo "[]"
  echo "== routes $ns"; $S ip -n "$ns" -j route show default 2>/dev/null || echo "[]"
done
"""
)

# run the arguments as root (sudo -n unless root already)
AS_ROOT = _PRELUDE + 'exec $S "$@"'

# the same, each word OWN_SSH first replaced by what $SSH_CONNECTION says here (before
# sudo, which drops it): the capture's own ssh connection, for the capture to leave out
OWN_SSH = "@SSH_CONNECTION@"
AS_ROOT_OWN_SSH = (
    _PRELUDE + 'n=$#; for a in "$@"; do if [ "$a" = ' + OWN_SSH + " ]; then a=${SSH_CONNECTION:-}; fi; "
    'set -- "$@" "$a"; done; shift $n; exec $S "$@"'
)

# tcpdump, stopped (cleanly: SIGINT flushes) when stdin ends; runs as root as a whole
# so that it may signal tcpdump.  $1: netns ("" for the default), $2: an ssh connection
# to leave out ("" for none; CLIENT CPORT SERVER SPORT), $3: the capture filter (one
# word, may be ""), then tcpdump's other args.
TCPDUMP = (
    'ns=$1; c=$2; f=$3; shift 3; x() { echo "not (tcp and host $1 and port $2 and host $3 and port $4)"; }; '
    'if [ -n "$c" ]; then n=$(x $c); f="${f:+($f) and }$n"; fi; if [ -n "$f" ]; then set -- "$@" "$f"; fi; '
    'if [ -n "$ns" ]; then set -- ip netns exec "$ns" "$@"; fi; '
    '"$@" </dev/null & p=$!; cat >/dev/null; kill -INT $p 2>/dev/null; wait $p'
)


def _prefix(spec: HostSpec, via: str | None) -> list[str] | None:
    """argv that runs ``sh -c SCRIPT ARGS`` on the host; None: an ssh command string is built."""
    if spec.method == "local":
        return []
    if spec.method == "via":
        assert via
        return with_stdin([w.replace("{host}", spec.target) for w in shlex.split(via)])
    return None


_SHELLS = ("sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "su")


def reparses(prefix: list[str]) -> bool:
    """Whether a ``--via`` prefix hands the command to a shell as one string: ssh (it
    joins its arguments with spaces for the remote login shell), or a prefix ending in
    a shell's (or su's) ``-c``.  Such a prefix gets the command as one quoted word."""
    if not prefix:
        return False
    names = [os.path.basename(w) for w in prefix]
    if "ssh" in names:
        return True
    last = prefix[-1]
    return bool(re.fullmatch(r"-[A-Za-z]*c", last)) and any(n in _SHELLS for n in names[:-1])


_EXEC_TOOLS = ("docker", "podman", "nerdctl", "kubectl", "oc")


def over_ssh(spec: HostSpec, via: str | None) -> bool:
    """Whether this host's commands run over ssh (its own, or a --via prefix with ssh in
    it): then the capture leaves out its own connection (``$SSH_CONNECTION`` there)."""
    if spec.method == "ssh":
        return True
    if spec.method == "via" and via:
        return "ssh" in (os.path.basename(w) for w in shlex.split(via))
    return False


def older_agent(argv: list[str], options: str) -> list[str]:
    """The long options of ``argv`` (a remote agent's command line) that the remote
    tracer's agent does not know, by what its ``--help`` lists (``options``, the probe's
    ``agent_options``): a host with an older tracer gets tcpdump instead of a refusal.
    Nothing when its help could not be read (an agent of any age is then tried)."""
    known = set(options.split())
    if not known:
        return []
    words = argv[: argv.index("--")] if "--" in argv else argv  # after --: the capture filter
    return sorted({w.split("=", 1)[0] for w in words if w.startswith("--") and w.split("=", 1)[0] not in known})


def with_stdin(words: list[str]) -> list[str]:
    """``docker exec``/``kubectl exec`` without ``-i`` give the command no stdin, and EOF on
    stdin is how a host is asked to stop: add ``-i`` right after ``exec``."""
    if not words or os.path.basename(words[0]) not in _EXEC_TOOLS or "exec" not in words:
        return words
    k = words.index("exec")
    flags = []
    for w in words[k + 1 :]:
        if w == "--" or not w.startswith("-"):
            break
        flags.append(w)
    if any(
        f in ("-i", "--stdin", "--interactive")
        or f.startswith("--stdin=")
        or f.startswith("--interactive=")
        or (not f.startswith("--") and "i" in f[1:])
        for f in flags
    ):
        return words
    return [*words[: k + 1], "-i", *words[k + 1 :]]


def host_argv(
    spec: HostSpec, script: str, args: list[str], *, via: str | None = None, ssh_config: str | None = None
) -> list[str]:
    words = ["sh", "-c", script, "tracer-remote", *args]
    pre = _prefix(spec, via)
    if pre is not None:
        return [*pre, shlex.join(words)] if reparses(pre) else pre + words
    argv = ["ssh", *SSH_OPTIONS]
    if ssh_config:
        argv += ["-F", ssh_config]
    if spec.port:
        argv += ["-p", str(spec.port)]
    # ssh hands the remote login shell one string: quote every word for it
    return [*argv, spec.target, shlex.join(words)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain_failure(stderr_lines: list[str], code: int | None, what: str) -> str:
    """One line saying why a host could not be captured, from ssh/sudo/tool messages."""
    text = "\n".join(stderr_lines)
    lines = [_one_line(x) for x in stderr_lines if x.strip() and not set(x.strip()) <= {"@"}]
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        kind = (
            "its host key does not match known_hosts (REMOTE HOST IDENTIFICATION HAS CHANGED)"
            if "HAS CHANGED" in text
            else "its host key is not in known_hosts"
        )
        return f"refused: {kind}; Host key verification failed"
    for key in (
        "a password is required",
        "a terminal is required",
        "is not in the sudoers",
        "may not run sudo",
        "not allowed to execute",
    ):
        for x in lines:
            if key in x:
                return f"sudo refused ({x}); capturing needs root or passwordless sudo"
    if lines:
        return lines[-1]
    return f"{what} exited with status {code}" if code is not None else f"{what} failed"


# -- the probe's answer --------------------------------------------------------------


def parse_probe(text: str) -> tuple[dict[str, str], dict[str | None, tuple[list, list]]]:
    """The probe's output: key=value facts, and per netns (None: default) (links, routes)."""
    facts: dict[str, str] = {}
    spaces: dict[str | None, tuple[list, list]] = {}
    cur: tuple[str, str | None] | None = None
    buf: list[str] = []

    def close() -> None:
        if cur is None:
            return
        try:
            data = json.loads("".join(buf) or "[]")
        except ValueError:
            data = []
        links, routes = spaces.setdefault(cur[1], ([], []))
        (links if cur[0] == "links" else routes).extend(data if isinstance(data, list) else [])

    for line in text.splitlines():
        if line.startswith("== "):
            close()
            words = line[3:].split(None, 1)
            cur = (words[0], words[1] if len(words) > 1 else None)
            buf = []
        elif cur is not None:
            buf.append(line)
        elif "=" in line:
            k, _, v = line.partition("=")
            facts[k.strip()] = v.strip()
    close()
    return facts, spaces
