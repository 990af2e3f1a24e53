"""Packet dissection, at two speeds.

* :mod:`tracer.dissect.fast` — no scapy: the encapsulation stack and innermost
  packet identity of every frame (``identify``), and the cheaper
  (encapsulation, inner protocol) question of ``--stats`` (``classify``).
* :mod:`tracer.dissect.tree` — scapy, only for the frame a person looks at:
  layers with byte spans and rendered fields (``dissect``, ``layer_names``).
* :mod:`tracer.text` — ``safe``: packet-derived text made harmless
  for a terminal.

Nothing is imported here: importing :mod:`tracer.dissect.fast` must not pay
for scapy.
"""
