"""Shared test helpers: where the public captures and the bundled ones live.

The public captures the tests read are vendored in ``tests/data/pcaps`` (same
sub-paths as before: ``vxlan/...``, ``sll/...``, ``other/malformed/...``), byte for
byte from their upstream repositories; ``tests/data/pcaps/PROVENANCE.md`` gives the
source, commit, licence and sha256 of each, and ``tests/data/pcaps/LICENSES/`` the
upstream licence texts.  Only permissively licensed files are vendored: the few
GPL/LGPL ones (``NOT_VENDORED``) are left out, and a test that asks for one of them
is skipped with that reason.  Nothing is read from outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The vendored public captures (the name is kept: test modules import it).
SHARED_PCAPS = REPO / "tests" / "data" / "pcaps"
BUNDLED = REPO / "scenarios" / "flannel-vxlan" / "capture.pcapng"

# Public captures some tests name but that are not vendored, with the reason
# (their upstream licence is copyleft; see tests/data/pcaps/PROVENANCE.md).
NOT_VENDORED = {
    "pcapng_multi_if/retis_kernel_probe_points_ovs.pcapng": "GPL-2.0 (retis-org/retis)",
    "other/malformed/scapy_one_trailing_byte.pcap": "GPL-2.0 (secdev/scapy)",
    "vxlan/ndpi_vxlan_vlan_tagged_underlay.pcap": "LGPL-3.0 (ntop/nDPI)",
    "other/malformed/ndpi_fuzz_caplen_gt_origlen_truncated.pcap": "LGPL-3.0 (ntop/nDPI)",
}

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root to create network namespaces (run as root, as CI does)"
)


def shared_pcap(rel: str) -> Path:
    """A vendored public capture from tests/data/pcaps.  Skip (with the licence reason)
    for one of the copyleft captures left out; fail for any other missing name, as the
    captures are part of the repository and a missing one is a mistake, not a setup."""
    if rel in NOT_VENDORED:
        pytest.skip(f"capture {rel} is {NOT_VENDORED[rel]} and not vendored in tests/data")
    path = SHARED_PCAPS / rel
    if not path.is_file():
        pytest.fail(f"capture {rel} is missing from {SHARED_PCAPS} (see PROVENANCE.md there)")
    return path


NOBODY = 65534


@pytest.fixture
def nobody_dir():
    """A directory uid 65534 may write in: where ``tracer live -w`` goes when the test
    runs it as root (it becomes nobody) or with SUDO_UID=65534, as the file is opened
    with the rights of that user.  (pytest's tmp_path is root's, mode 0700.)"""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tracer-test-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        if IS_ROOT:
            os.chown(d, NOBODY, NOBODY)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
