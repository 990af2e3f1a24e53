"""Full dissection with scapy, for the one frame a person looks at.

``dissect(data, linktype)`` returns the frame's layers, outermost first, each
with the byte span of its header in the frame (the UI highlights it in the hex
view) and its fields rendered as scapy's ``show2`` would (``i2repr``), made
terminal-safe with :func:`tracer.text.safe`.  ``layer_names`` is the
short form for ``tracer replay --print --json``.

Only the scapy modules needed are imported (not ``scapy.all``: it costs about
half a second of startup), once, when this module is imported.  Bindings made
here, on top of scapy's own:

* VXLAN on UDP 4789 and 8472: scapy's ``scapy.layers.vxlan`` already binds both
  ports in both directions (``bind_layers`` with dport, and with sport); it is
  imported here so that they apply.
* flannel's UDP backend (UDP 8285) carries a bare IP packet, no header of its
  own.  It is bound to :class:`FlannelUDP`, a zero-length layer whose only job
  is to pick IP or IPv6 by the version nibble.  It is deliberately a layer of
  its own: in a layer list ``UDP / FlannelUDP / IP`` says "tunnel" where
  ``UDP / IP`` would look like a dissector accident, and it matches the fast
  parser's stack.  Its span is empty (``start == end``).
* Geneve (``scapy.contrib.geneve``, UDP 6081) and MPLS (``scapy.contrib.mpls``)
  are loaded too; both are cheap.
* DNS (``scapy.layers.dns``: UDP and TCP 53, mDNS 5353, LLMNR 5355): a cluster's
  name lookups (kube-dns, CoreDNS) are what people look into first; 4 ms to import.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from scapy.config import conf
from scapy.fields import ShortEnumField, X3BytesField, XByteField, XIntField, XShortEnumField, XShortField
from scapy.layers import dns, inet, inet6, l2, vxlan  # noqa: F401  (registers bindings)
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import NoPayload, Packet, bind_layers

try:  # contrib modules: present in every scapy 2.5+, but never fatal
    from scapy.contrib import geneve, mpls  # noqa: F401
except Exception:  # noqa: BLE001 # pragma: no cover
    pass

from tracer.text import safe

RAW_IP_LINKTYPES = frozenset({101, 12, 14, 228, 229})
FLANNEL_UDP_PORT = 8285
MAX_VALUE_CHARS = 200  # a field value longer than this is cut (the hex view has it all)
_CACHE_SIZE = 256


class FlannelUDP(Packet):
    """flannel's UDP backend: the IP packet follows the UDP header directly."""

    name = "FlannelUDP"
    fields_desc = []  # noqa: RUF012 - scapy's own class attribute

    def guess_payload_class(self, payload: bytes):
        version = payload[0] >> 4 if payload else 0
        if version == 4:
            return IP
        if version == 6:
            return IPv6
        return conf.raw_layer


bind_layers(UDP, FlannelUDP, dport=FLANNEL_UDP_PORT)


class Field(NamedTuple):
    name: str
    value: str  # scapy's i2repr, terminal-safe


class Layer(NamedTuple):
    name: str  # scapy's class name: Ether, IP, UDP, VXLAN, ..., Raw, Padding
    start: int  # byte offset of the header in the frame
    end: int  # exclusive; Raw/Padding layers cover payload and trailer bytes
    fields: tuple[Field, ...]


def _first_class(data: bytes, linktype: int):
    if linktype == 1:
        return l2.Ether
    if linktype in RAW_IP_LINKTYPES:
        version = data[0] >> 4 if data else 0
        return IP if version == 4 else IPv6 if version == 6 else None
    if linktype in (0, 108):
        # The AF value is in host byte order (NULL) or network order (LOOP), and
        # captures travel between machines: the value itself tells which.
        if len(data) >= 4 and int.from_bytes(data[:4], "little") > 0xFFFF:
            return l2.LoopbackOpenBSD
        return l2.Loopback
    if linktype == 113:
        return l2.CookedLinux
    if linktype == 276:
        return l2.CookedLinuxV2
    return conf.l2types.num2layer.get(linktype)


def _link_address(pkt: Packet) -> str:
    """A cooked capture's (SLL, SLL2: ``tcpdump -i any``) link-layer address, as
    tcpdump and Wireshark write it: its ``lladdrlen`` bytes, ``aa:76:30:71:b0:e7``
    (scapy keeps the 8-byte field as bytes: ``b'\xaav0q\xb0\xe7'``)."""
    raw = bytes(pkt.getfieldval("src"))
    n = pkt.getfieldval("lladdrlen")
    n = n if isinstance(n, int) and 0 <= n <= len(raw) else len(raw)
    return ":".join(f"{b:02x}" for b in raw[:n]) or "(none)"


# Numbers scapy writes in hex only (an ICMP id 0x4d61, a VNI 0x25): written as the
# rows and tshark write them, with the hex after (``19809 (0x4d61)``), except those
# read as hex (checksums, the DS field)
_HEX_FIELDS = (XShortField, XByteField, XIntField, X3BytesField)
_HEX_ONLY = ("chksum", "cksum", "checksum", "tos")


def _number(fld, value: object, text: str) -> str:
    inner = getattr(fld, "fld", fld)  # a ConditionalField's own field
    if not isinstance(value, int) or isinstance(value, bool):
        return text
    if isinstance(inner, XShortEnumField):  # an EtherType: IPv4 (0x0800), as Wireshark
        return f"{text} ({value:#06x})" if text != hex(value) else f"{value:#06x}"
    if isinstance(inner, _HEX_FIELDS) and not any(h in fld.name for h in _HEX_ONLY):
        return str(value) if fld.name.startswith("reserved") else f"{value} ({text})"
    if isinstance(inner, ShortEnumField) and text != str(value):  # a port: 80 (http)
        return f"{value} ({text})"
    return text


def _value(pkt: Packet, fld) -> str:
    try:
        if fld.name == "src" and isinstance(pkt, (l2.CookedLinux, l2.CookedLinuxV2)):
            return _link_address(pkt)
        value = pkt.getfieldval(fld.name)
        text = _number(fld, value, fld.i2repr(pkt, value))
    except Exception as exc:  # noqa: BLE001 - a field that cannot render says so
        text = f"<{type(exc).__name__}>"
    text = safe(text)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


def _fields(pkt: Packet) -> tuple[Field, ...]:
    out = []
    for fld in pkt.fields_desc:
        if fld.isconditional and fld.name not in pkt.fields:
            continue  # a conditional field this packet does not carry
        out.append(Field(fld.name, _value(pkt, fld)))
    return tuple(out)


def _raw_layer(data: bytes, start: int = 0, name: str = "Raw") -> Layer:
    load = safe(repr(bytes(data[start:])))
    if len(load) > MAX_VALUE_CHARS:
        load = load[: MAX_VALUE_CHARS - 1] + "…"
    return Layer(name, start, len(data), (Field("load", load),))


def _header_len(pkt: Packet) -> int:
    cache = pkt.raw_packet_cache
    if cache is not None:
        return len(cache)
    # No cache (a layer that rebuilt itself): what it is minus what it carries.
    return len(bytes(pkt)) - len(bytes(pkt.payload))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _dissect(data: bytes, linktype: int) -> tuple[Layer, ...]:
    cls = _first_class(data, linktype)
    if cls is None or not data:
        return (_raw_layer(data),)
    try:
        pkt = cls(data)
    except Exception:  # noqa: BLE001 - a frame scapy cannot take apart is one Raw layer
        return (_raw_layer(data),)
    layers: list[Layer] = []
    n = len(data)
    off = 0
    layer = pkt
    try:
        while not isinstance(layer, NoPayload):
            size = _header_len(layer)
            start = min(off, n)
            end = min(off + size, n)
            layers.append(Layer(layer.__class__.__name__, start, end, _fields(layer)))
            off += size
            layer = layer.payload
    except Exception:  # noqa: BLE001
        # Keep what was dissected; the rest of the bytes become Raw.
        pass
    if off < n:
        if layers and layers[-1].name in ("Raw", "Padding"):
            last = layers[-1]
            layers[-1] = last._replace(end=n)
        else:
            layers.append(_raw_layer(data, off))
    return tuple(layers)


def dissect(data: bytes, linktype: int) -> list[Layer]:
    """The layers of one frame, outermost first; never raises.

    Unknown link types, and frames scapy cannot take apart, come back as one
    ``Raw`` layer.  Results are cached (bounded) per (bytes, linktype).
    """
    data = bytes(data)
    try:
        return list(_dissect(data, linktype))
    except Exception:  # noqa: BLE001 # pragma: no cover - _dissect already guards
        return [_raw_layer(data)]


def layer_names(data: bytes, linktype: int) -> list[str]:
    """Layer names outermost first, as scapy names its classes, without Raw/Padding.

    E.g. ``["Ether", "IP", "UDP", "VXLAN", "Ether", "IP", "ICMP"]``.
    """
    return [layer.name for layer in dissect(data, linktype) if layer.name not in ("Raw", "Padding")]


# key (from fast.layers_key) -> the layer names, or None: not cacheable (look every time)
_names_at: dict[tuple, tuple[str, ...] | None] = {}
_NAMES_AT_MAX = 1 << 16


@functools.cache
def _udp_sports_bound() -> frozenset[int]:
    """The UDP source ports some scapy layer is bound to (DNS 53, VXLAN 4789, ...)."""
    return frozenset(fields["sport"] for fields, _cls in UDP.payload_guess if "sport" in fields)


@functools.lru_cache(maxsize=4096)
def _payload_is_raw(stack: tuple[str, ...], ports: bytes) -> bool:
    """Whether scapy takes whatever follows this frame's L4 header as Raw, whatever
    its bytes: TCP/UDP with ports no layer is bound to (the payload class is chosen
    from the header's fields alone), ICMP echo (fast.layers_key passes no other)."""
    l4 = stack[-1]
    if l4 == "ICMP":
        return True
    sport, dport = int.from_bytes(ports[:2]), int.from_bytes(ports[2:])
    cls = inet.TCP if l4 == "TCP" else UDP
    return cls(sport=sport, dport=dport).guess_payload_class(b"\0" * 16) is conf.raw_layer


def layer_names_at(
    key: tuple, stack: tuple[str, ...], ports: bytes | None, data: bytes, linktype: int, sport: int | None = None
) -> tuple[list[str], bool]:
    """(:func:`layer_names` of ``data``, whether every frame with ``key`` has them).

    ``key`` and ``sport`` (a VXLAN frame's outer UDP source port) are from
    ``fast.layers_names_key``; ``ports``: the frame's inner TCP/UDP ports, as they are
    on the wire.  Ports count only where a layer is bound to them.  The names are
    remembered when scapy's answer is the fast lane's ``stack`` and what follows the
    L4 header is Raw whatever it holds."""
    raw = _payload_is_raw(stack, ports or b"")
    # ports no layer is bound to: any ports
    key = (key, None if raw else ports, sport if sport in _udp_sports_bound() else None)
    if key not in _names_at:
        found = layer_names(data, linktype)
        if len(_names_at) >= _NAMES_AT_MAX:
            _names_at.clear()
        fixed = tuple(found) if tuple(found) == stack and raw else None
        _names_at[key] = fixed
        return found, fixed is not None
    names = _names_at[key]
    if names is None:
        return layer_names(data, linktype), False
    return list(names), True
