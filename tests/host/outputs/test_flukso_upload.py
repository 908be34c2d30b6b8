"""The Flukso uploader against a real Flukso-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from gridtap.backoff import Backoff
from gridtap.errors import UserError
from gridtap.outputs.flukso import FluksoUploader, Secret, load_device_key
from gridtap.store.spool import Spool
from tests.support.broker import free_port
from tests.support.disk import fill as fill_disk
from tests.support.disk import small_tmpfs
from tests.support.fakes import FakeClock
from tests.support.flukso_server import FluksoServer, digest

T0 = 1_700_000_000
S1 = "1994ad6054785f2db8f726086c486ca9"
S2 = "c1411c6b4f9910bbbab09f145f8533b9"
KEY = "0123456789abcdef0123456789abcdef"
WRONG = "fedcba9876543210fedcba9876543210"


def raw_post(server: FluksoServer, sensor: str, body: bytes, key: str = KEY, version: str = "1.0",
             sig: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", f"/sensor/{sensor}", body=body,
                 headers={"X-Version": version, "X-Digest": sig if sig is not None else digest(key, body),
                          "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read(), dict(resp.getheaders())
    conn.close()
    return out


def fill(spool: Spool, sensor: str, n: int, start: int = T0, step: int = 10,
         seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pts, c = [], 1000
    for i in range(n):
        c += rng.randint(0, 30)
        pts.append((start + step * i, c))
        spool.add(sensor, *pts[-1])
    spool.commit()
    return pts


# -- the test server itself behaves like the real one -----------------------------

def test_server_enforces_version_digest_and_json_rules() -> None:
    with FluksoServer({S1: KEY}) as srv:
        good = b'{"measurements":[[1700000000,5],[1700000010,7]]}'
        assert raw_post(srv, S1, good, version="2.0")[0] == 400
        assert raw_post(srv, S1, good, sig="XYZ")[0] == 400
        assert raw_post(srv, S1.upper(), good)[0] == 400
        st, _, hdrs = raw_post(srv, S1, good, key=WRONG)
        assert st == 401 and hdrs["WWW-Authenticate"] == "Incorrect digest"
        st, _, hdrs = raw_post(srv, S2, good)
        assert st == 401 and "provisioning" in hdrs["WWW-Authenticate"]
        assert raw_post(srv, S1, b"{not json")[0] == 500
        assert raw_post(srv, S1, b'{"measurements":[]}')[0] == 500
        assert raw_post(srv, S1, b'{"something":1}')[0] == 500
        assert srv.measurements(S1) == []
        st, body, _ = raw_post(srv, S1, good)
        assert (st, json.loads(body)) == (200, {"response": "ok"})
        # non-integer counters are skipped; an old timestamp stops the update but keeps what came before
        st, body, _ = raw_post(srv, S1, b'{"measurements":[[1700000020,8.5],[1700000030,9],[1700000005,9]]}')
        assert st == 200 and json.loads(body)["response"].startswith(
            "ERROR: illegal attempt to update using time 1700000005 when last update time is 1700000030")
        assert srv.measurements(S1) == [(T0, 5), (T0 + 10, 7), (T0 + 30, 9)]
        assert srv.energy(S1) == 4
        assert raw_post(srv, S1, b'{"config":{"enable":1,"class":"analog"}}')[0] == 204
        assert srv.config[S1]["class"] == "analog"


# -- uploads -------------------------------------------------------------------------

def test_live_upload_clears_the_spool_and_the_server_has_every_point(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=())
    p1 = fill(sp, S1, 30)
    p2 = fill(sp, S2, 5, seed=2)
    sp.add(S2, T0 + 100, 1999.7)  # fractional counter: uploaded rounded down, as Flukso wants integers
    sp.commit()
    with FluksoServer({S1: KEY, S2: KEY}) as srv:
        up = FluksoUploader(sp, srv.url, Secret(KEY), [S1, S2], batch=7)
        rep = up.upload()
        assert rep.ok and rep.cleared == 36 and rep.requests == 5 + 1
        assert srv.measurements(S1) == p1
        assert srv.measurements(S2) == p2 + [(T0 + 100, 1999)]
    assert sp.pending("flukso", S1) == [] and sp.pending("flukso", S2) == []
    assert len(sp.pending("pvoutput", S1)) == 30  # the other destination is untouched
    sp.close()


def test_outage_then_replay_with_aging_keeps_energy_exact(tmp_path: Path) -> None:
    """Four days without uplink at one tuple per 10 s; then everything goes up, aged and exact."""
    mono, wall = FakeClock(), FakeClock(float(T0))
    port = free_port()
    sp = Spool(tmp_path / "s.db", ["flukso"], commit_interval=3600, clock=mono, wall_clock=wall)
    up = FluksoUploader(sp, f"http://127.0.0.1:{port}/", Secret(KEY), [S1], clock=mono,
                        backoff=Backoff(base=10, cap=3600, rng=random.Random(3)), timeout=2)
    truth: list[tuple[int, int]] = []
    c = 0
    attempts = 0
    days = 4
    for i in range(days * 8640):
        ts = T0 + 10 * i
        mono.t = wall.t = float(ts)
        c += (i * 7919) % 13
        truth.append((ts, c))
        sp.add(S1, ts, c)
        sp.maybe_commit()
        if up.backoff.ready(mono.t):
            waiting = bool(sp.sensors("flukso"))
            up.step()  # connection refused: nothing is cleared, backoff grows
            if waiting:
                attempts += 1
                assert not up.last_report.ok and up.last_report.cleared == 0
    sp.commit()
    # once the backoff reached its cap (1 h) it never retried sooner than half of it
    assert attempts == up.backoff.failures
    assert 10 <= attempts <= 12 + days * 86400 // 1800
    queued = sp.stats()["flukso"][S1]["points"]
    assert queued is not None and queued < 2 * (days + 1) + 2 * (46 * 4 + 1) + 2 * (120 + 1)
    with FluksoServer({S1: KEY}, port=port) as srv:
        mono.t = up.backoff.not_before
        up.step()
        assert up.last_report.ok
        got = srv.measurements(S1)
    assert sp.pending("flukso", S1) == []
    assert got[0] == truth[0] and got[-1] == truth[-1]
    # energy per day (and so in total) is exactly what the board counted
    by_ts = dict(truth)
    for d in range(days):
        lo, hi = T0 - T0 % 86400 + d * 86400, T0 - T0 % 86400 + (d + 1) * 86400
        day = [p for p in got if lo <= p[0] < hi]
        ref = [p for p in truth if lo <= p[0] < hi]
        assert day[0] == ref[0] and day[-1] == ref[-1]
        assert all(by_ts[t] == v for t, v in day)
    sp.close()


def test_wrong_key_is_refused_and_nothing_is_cleared_nor_logged(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    fill(sp, S1, 5)
    mono = FakeClock(50.0)
    with FluksoServer({S1: KEY}) as srv, caplog.at_level(logging.DEBUG):
        up = FluksoUploader(sp, srv.url, Secret(WRONG), [S1], clock=mono,
                            backoff=Backoff(base=10, cap=100, rng=random.Random(1)))
        wait = up.step()
        assert srv.posts == 1 and srv.measurements(S1) == []
    assert not up.last_report.ok and "HTTP 401 (check the device key)" in (up.last_report.error or "")
    # a refusal of the sensor (its key, its id) backs that sensor off, not the uploader
    assert wait == 300 and up.backoff.failures == 0
    assert up.held[S1][0].failures == 1 and 55 <= up.held[S1][0].not_before <= 60
    assert len(sp.pending("flukso", S1)) == 5
    assert WRONG not in caplog.text and "401" in caplog.text
    assert WRONG not in repr(up.__dict__)
    sp.close()


def test_server_errors_back_off_exponentially_and_only_200_ok_clears(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    pts = fill(sp, S1, 20)
    mono = FakeClock(0.0)
    with FluksoServer({S1: KEY}) as srv:
        up = FluksoUploader(sp, srv.url, Secret(KEY), [S1], clock=mono, interval=300,
                            backoff=Backoff(base=10, cap=80, rng=random.Random(7)))
        srv.fail_next(6, status=503)
        waits = []
        for _ in range(6):
            waits.append(up.step())
            assert len(sp.pending("flukso", S1)) == 20
            assert up.step() == pytest.approx(waits[-1])  # not due yet: no request
            mono.t += waits[-1]
        assert srv.posts == 6
        ceilings = [10, 20, 40, 80, 80, 80]
        for w, ceiling in zip(waits, ceilings, strict=True):
            assert ceiling / 2 <= w <= ceiling
        assert up.step() == pytest.approx(300)  # success: back to the normal interval
        assert up.backoff.failures == 0
        assert srv.measurements(S1) == pts
    assert sp.pending("flukso", S1) == []
    sp.close()


def test_a_lost_reply_does_not_duplicate_or_lose_points(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    pts = fill(sp, S1, 12)
    with FluksoServer({S1: KEY}) as srv:
        up = FluksoUploader(sp, srv.url, Secret(KEY), [S1], batch=100)
        srv.drop_reply_next()
        rep = up.upload()
        assert not rep.ok and rep.cleared == 0
        assert srv.measurements(S1) == pts  # the server has them, the spool does not know
        more = [(T0 + 1000 + 10 * i, pts[-1][1] + 3 * i) for i in range(1, 6)]
        for p in more:
            sp.add(S1, *p)
        sp.commit()
        rep = up.upload()
        assert rep.ok and rep.requests == 2
        assert srv.measurements(S1) == pts + more
    assert sp.pending("flukso", S1) == []
    sp.close()


def test_device_key_comes_from_a_file_or_the_environment(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "key"
    f.write_text(KEY.upper() + "\n")
    assert load_device_key(f) == Secret(KEY)
    assert KEY not in repr(load_device_key(f)) and KEY not in f"{load_device_key(f)}"
    monkeypatch.setenv("GRIDTAP_FLUKSO_KEY", KEY)
    assert load_device_key() == Secret(KEY)
    monkeypatch.delenv("GRIDTAP_FLUKSO_KEY")
    with pytest.raises(UserError, match="set GRIDTAP_FLUKSO_KEY"):
        load_device_key()
    f.write_text("short")
    with pytest.raises(UserError, match=r"key file .* must be 32 hex digits \(got 5 characters\)"):
        load_device_key(f)
    with pytest.raises(UserError, match="cannot read"):
        load_device_key(tmp_path / "missing")
    sp = Spool(tmp_path / "s.db", ["flukso"])
    with pytest.raises(UserError, match="must be 32 lowercase hex"):
        FluksoUploader(sp, "http://127.0.0.1/", Secret(KEY), ["abc"])
    with pytest.raises(UserError, match="base URL"):
        FluksoUploader(sp, "ftp://x/", Secret(KEY), [S1])
    sp.close()


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(base=2, cap=30, rng=random.Random(4))
    seen = [b.failure(100.0) for _ in range(8)]
    for i, d in enumerate(seen):
        ceiling = min(30, 2 * 2**i)
        assert ceiling / 2 <= d <= ceiling
    assert len(set(seen)) == len(seen)  # jittered, not a fixed schedule
    assert not b.ready(100.0) and b.ready(100.0 + seen[-1])
    b.success()
    assert b.ready(0.0) and b.ceiling() == 2
    with pytest.raises(ValueError, match="cap"):
        Backoff(base=10, cap=5)


def test_https_verifies_the_server_against_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    cafile = tmp_path / "flukso.ca.crt"
    ca.cert_pem.write_to_path(str(cafile))
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    pts = fill(sp, S1, 4)
    with FluksoServer({S1: KEY}, tls=ctx) as srv:
        assert srv.url.startswith("https://")
        # without the CA the certificate does not verify: nothing is sent, nothing cleared
        stranger = FluksoUploader(sp, srv.url, Secret(KEY), [S1]).upload()
        assert not stranger.ok and "SSL" in (stranger.error or "")
        assert len(sp.pending("flukso", S1)) == 4
        rep = FluksoUploader(sp, srv.url, Secret(KEY), [S1], cafile=str(cafile)).upload()
        assert rep.ok and srv.measurements(S1) == pts
    sp.close()


def test_ingest_and_upload_threads_share_the_spool(tmp_path: Path) -> None:
    """The daemon adds and commits on its ingest thread while the uploader drains: every point once."""
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=(), commit_points=40)
    truth = [(T0 + i, 5 * i + (i % 3)) for i in range(3000)]
    acked: list[int] = []
    done = threading.Event()

    def ingest() -> None:
        for seq, (ts, c) in enumerate(truth):
            sp.add(S1, ts, c, token=seq)
            acked.extend(sp.maybe_commit())
        acked.extend(sp.commit())
        uploaded_meanwhile.append(len(srv.measurements(S1)))
        done.set()

    uploaded_meanwhile: list[int] = []
    with FluksoServer({S1: KEY}) as srv:
        up = FluksoUploader(sp, srv.url, Secret(KEY), [S1], batch=97)
        t = threading.Thread(target=ingest)
        t.start()
        while not done.is_set() or sp.pending("flukso", S1):
            assert up.upload().ok
        t.join()
        assert srv.measurements(S1) == truth
    assert acked == list(range(len(truth)))
    assert uploaded_meanwhile[0] > 0  # points went up while the ingest thread was still committing
    sp.close()


def test_a_full_disk_while_clearing_the_spool_is_retried_without_duplicates(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        sp = Spool(disk / "s.db", ["flukso"], aging=())
        pts = fill(sp, S1, 12)
        with FluksoServer({S1: KEY}) as srv:
            up = FluksoUploader(sp, srv.url, Secret(KEY), [S1], batch=100)
            filler = fill_disk(disk)
            rep = up.upload()  # the server takes the points; the spool cannot delete them
            assert not rep.ok and "spool cannot record the upload" in (rep.error or "")
            assert "full" in (rep.error or "")
            assert srv.measurements(S1) == pts
            filler.unlink()
            rep = up.upload()
            assert rep.ok, rep.error
            assert srv.measurements(S1) == pts  # nothing twice
        assert sp.pending("flukso", S1) == []
        sp.close()
