"""`make demo`'s hub part: the community hub with four homes, and a screenshot of each page.

A private PostgreSQL, `gridtap hub serve` on 127.0.0.1, four users named as on the Flukso
slides (icarus75 subscribes to the other three, who share), a day of 10-s counters per home
from the load generator's households posted through the Flukso API as a Fluksometer does,
then headless chromium logs in as icarus75 and saves the login page and the dashboard per
interval and unit to OUT (default demo-out/hub/).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USERS = ("icarus75", "mackenzie", "jan", "Ludo")
PASSWORD = "fluksonian-demo"
PAGES = (("hour", "watt"), ("day", "watt"), ("month", "watt"), ("night", "watt"), ("day", "kwhperyear"),
         ("day", "eurperyear"))


def main(argv: list[str] | None = None) -> int:
    for p in (ROOT, ROOT / "host", ROOT / "hub"):
        sys.path.insert(0, str(p))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "demo-out" / "hub")
    args = ap.parse_args(argv)
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        print("hub demo: chromium and chromium-driver are needed (make setup installs them)", file=sys.stderr)
        return 1
    import psycopg

    from gridtap_hub import accounts, schema
    from gridtap_hub.cluster import PrivateCluster
    from gridtap_hub.loadgen import STEP_S, FlmClient, Home
    from gridtap_hub.server import HubServer
    from tests.hub.browser import chromium

    args.out.mkdir(parents=True, exist_ok=True)
    with PrivateCluster() as cl, psycopg.connect(cl.dsn, autocommit=True) as conn:
        now = time.time()
        schema.create(conn, now)
        homes = []
        for i, name in enumerate(USERS):
            uid = accounts.add_user(conn, name, PASSWORD, size_band=2 + i % 2, shares=i > 0)
            h = Home.new(4242 + i, n_sensors=1)
            accounts.claim(conn, uid, h.device, h.key, [(h.sensors[0].id, "main")])
            homes.append(h)
        for name in USERS[1:]:
            accounts.subscribe(conn, accounts.user_id(conn, USERS[0]), name)
        with HubServer(cl.dsn, tz="Europe/Brussels") as hub:
            client = FlmClient("127.0.0.1", hub.port)
            t = int(now) - 86400
            while t < now:
                t += STEP_S
                for h in homes:
                    h.advance(t)
            for h in homes:
                client.upload(h)
            schema.refresh_usage(conn)
            with chromium() as d:
                d.get(hub.url + "login")
                d.save_screenshot(str(args.out / "login.png"))
                d.find_element("id", "name").send_keys(USERS[0])
                d.find_element("id", "password").send_keys(PASSWORD)
                d.find_element("id", "submit").click()
                for interval, unit in PAGES:
                    d.get(f"{hub.url}dashboard?interval={interval}&unit={unit}")
                    d.save_screenshot(str(args.out / f"dashboard-{interval}-{unit}.png"))
            print(f"hub demo: {len(homes)} homes, a day each; screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
