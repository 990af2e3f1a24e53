"""Shared test helpers: where the public captures and the bundled ones live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared/pcaps next to the checkout (CI lays shared/ beside the clone).
SHARED_PCAPS = (REPO.parent / "shared" / "pcaps").resolve()
BUNDLED = REPO / "scenarios" / "flannel-vxlan" / "capture.pcapng"

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root to create network namespaces (run as root, as CI does)"
)


def shared_pcap(rel: str) -> Path:
    """A capture from ../shared/pcaps, or skip (with the reason) when it is absent."""
    path = SHARED_PCAPS / rel
    if not path.exists():
        pytest.skip(f"public capture {rel} not present at {SHARED_PCAPS}")
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
