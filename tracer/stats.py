"""Per-NIC statistics for ``tracer replay --stats``: the fast path only.

Never dissects with scapy: the encapsulation kind and inner protocol come from
the fast identity parser, so a million frames cost seconds, not minutes.
"""

from __future__ import annotations

from typing import Any

from tracer.dissect.fast import classify
from tracer.model import FrameStore, linktype_name


def nic_stats(store: FrameStore) -> list[dict[str, Any]]:
    """One dict per NIC, in NIC order."""
    n = len(store)
    counts = [dict() for _ in store.nics]  # nic -> {encap: {inner: frames}}
    buffers, buf_of, offset, caplen = store.buffers, store.buf_of, store.offset, store.caplen
    nic_of, origlen, ts = store.nic_of, store.origlen, store.ts_ns
    linktypes = [nic.linktype for nic in store.nics]
    for i in range(n):
        nic = nic_of[i]
        off = offset[i]
        encap, inner = classify(buffers[buf_of[i]], off, caplen[i], linktypes[nic])
        if encap:
            per = counts[nic].setdefault(encap, {})
            per[inner] = per.get(inner, 0) + 1

    out = []
    for nic in store.nics:
        idx = store.per_nic[nic.id]
        frames = len(idx)
        out.append(
            {
                "nic": nic.name,
                "host": nic.host,
                "container": nic.container,
                "label": nic.label,
                "linktype": nic.linktype,
                "linktype_name": linktype_name(nic.linktype),
                "frames": frames,
                "bytes": sum(origlen[i] for i in idx),
                "first": min(ts[i] for i in idx) / 1e9 if frames else None,
                "last": max(ts[i] for i in idx) / 1e9 if frames else None,
                "received": nic.received,
                "dropped": nic.dropped,
                "encapsulated": {
                    encap: {"frames": sum(inner.values()), "inner": dict(sorted(inner.items()))}
                    for encap, inner in sorted(counts[nic.id].items())
                },
            }
        )
    return out
