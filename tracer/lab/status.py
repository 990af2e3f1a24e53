"""What the lab has up: every lab netns, grouped by scenario, with its NICs.

Read from the kernel (``ip -j``), not only from the state files, so leftovers
of a crashed run show up too.
"""

from __future__ import annotations

import json
from pathlib import Path

from tracer.lab.build import STATE_DIR, LabError, lab_namespaces, run


def nics(netns: str) -> list[dict]:
    """Each NIC of ``netns`` except lo: name, kind, state, MAC, master, addresses."""
    try:
        links = json.loads(run(["ip", "-n", netns, "-j", "-d", "addr", "show"]) or "[]")
    except (LabError, ValueError):
        return []
    out = []
    for link in links:
        if link.get("link_type") == "loopback":
            continue
        info = link.get("linkinfo", {})
        kind = info.get("info_kind") or ("tun" if link.get("link_type") == "none" else "physical")
        nic = {
            "name": link.get("ifname"),
            "kind": kind,
            "state": link.get("operstate", "").lower(),
            "mac": link.get("address"),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if "local" in a],
        }
        if link.get("master"):
            nic["master"] = link["master"]
        data = info.get("info_data", {})
        if kind == "vxlan":
            nic["vxlan"] = {k: data[k] for k in ("id", "port", "local", "link") if k in data}
        out.append(nic)
    return out


def states() -> list[dict]:
    found = []
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            found.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    return found


def status() -> dict:
    """{"labs": [{scenario, prefix, netns: [{name, nics}]}], "leftovers": [{name, nics}]}."""
    all_ns = lab_namespaces()
    claimed: set[str] = set()
    labs = []
    for st in states():
        prefix = st.get("prefix", "")
        names = [n for n in all_ns if prefix and n.startswith(prefix)]
        claimed.update(names)
        labs.append(
            {
                "scenario": st.get("scenario"),
                "tag": st.get("tag"),
                "prefix": prefix,
                "up": bool(names),
                "netns": [{"name": n, "node": st.get("nodes", {}).get(n), "nics": nics(n)} for n in names],
            }
        )
    leftovers = [{"name": n, "nics": nics(n)} for n in all_ns if n not in claimed]
    return {"labs": labs, "leftovers": leftovers}


def format_status(st: dict) -> str:
    lines = []
    for lab in st["labs"]:
        tag = f" (tag {lab['tag']})" if lab.get("tag") else ""
        lines.append(f"{lab['scenario']}{tag}: {'up' if lab['up'] else 'state file only, no namespaces'}")
        for ns in lab["netns"]:
            lines.append(f"  {ns['name']}" + (f"  ({ns['node']})" if ns.get("node") else ""))
            for nic in ns["nics"]:
                extra = f" master={nic['master']}" if nic.get("master") else ""
                if nic.get("vxlan"):
                    extra += " " + " ".join(f"{k}={v}" for k, v in nic["vxlan"].items())
                addrs = " ".join(nic["addresses"]) or "-"
                lines.append(f"    {nic['name']:<10} {nic['kind']:<7} {nic['state']:<8} {addrs}{extra}")
    if st["leftovers"]:
        lines.append("leftovers (no state file; 'tracer lab down --all' removes them):")
        for ns in st["leftovers"]:
            lines.append(f"  {ns['name']}: " + ", ".join(f"{n['name']} ({n['kind']})" for n in ns["nics"]))
    if not lines:
        lines.append("no lab is up")
    return "\n".join(lines)
