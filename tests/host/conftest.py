"""Fixtures for the daemon tests: a fake board on a pty and a daemon in a thread (tests/support/daemon.py)."""

from tests.support.daemon import cached_rig, rig, rrd_mode, short_tmp

__all__ = ["cached_rig", "rig", "rrd_mode", "short_tmp"]
