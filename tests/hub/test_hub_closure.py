"""The daemon's import closure does not grow with the hub: `gridtap hub` is offered by the CLI
without importing psycopg, and no daemon module imports the hub."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import gridtap.cli, gridtap.daemon
parser = gridtap.cli.build_parser()
assert 'hub' in parser._subparsers._group_actions[0].choices, 'gridtap hub missing'
try:
    gridtap.cli.main(['daemon', '--help'])
except SystemExit as exc:
    assert exc.code == 0
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'selenium')
             or m in ('gridtap_hub.server', 'gridtap_hub.ingest', 'gridtap_hub.db'))
assert not bad, bad
print('closure ok')
"""


def test_cli_offers_hub_without_importing_it() -> None:
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.endswith("closure ok\n"), r.stderr
