"""Fixtures for the daemon tests: a fake board on a pty and a daemon in a thread (tests/support/daemon.py)."""

from tests.support.daemon import rig, short_tmp

__all__ = ["rig", "short_tmp"]
