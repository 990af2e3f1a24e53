"""The lab: the article's hosts and containers as network namespaces on one machine.

- :mod:`tracer.lab.scenario` reads and checks ``scenarios/*.toml``;
- :mod:`tracer.lab.build` builds a scenario (``Lab.up``) and removes it (``Lab.down``);
- :mod:`tracer.lab.traffic` sends its traffic from inside the namespaces;
- :mod:`tracer.lab.record` captures every NIC of the path into one pcapng;
- :mod:`tracer.lab.status` reports what is up; :mod:`tracer.lab.agents` are the
  helper processes (HTTP server, flannel UDP forwarder); :mod:`tracer.cli.lab` is
  ``tracer lab``.

Importing this package does nothing (no subprocess, no root needed).
"""
