"""The analogue model: mains, loads, CT/VT transfer, the ADC, and the ground truth.

Everything is a function of absolute simulated time t (seconds from the start
of the run) and is evaluated with numpy on whole arrays of instants, one
simulated second ("chunk") at a time:

* the mains phase theta(t) integrates a frequency that is piecewise linear
  between per-second knots (a bounded random walk, 50 Hz +- 0.5 Hz), and the
  fundamental RMS voltage is piecewise linear too (230 V +- 10 %);
* v(t) and every load current are sums of odd harmonics
  (cos h.theta, sin h.theta for h = 1, 3, 5, 7) times a magnitude that is a
  function of time (switching schedules, PV output, the voltage);
* the ADC sees the transduced signals (gain error, phase lead, optional core
  saturation, bias offset, noise for the configured ENOB, 12-bit rounding) at
  the instants of the round-robin multiplexer: channel c of set n is sampled
  at n / sets_per_s + c * slot;
* the ground truth integrates the primary v(t).i(t) with the midpoint rule on
  a grid of 4,800 cells a second (switching instants sit on that grid,
  so the integrand is smooth inside every cell). It never looks at ADC samples.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gridtap_sim.board import Board

F64 = npt.NDArray[np.float64]
HARMONICS = (1, 3, 5, 7)
NH = len(HARMONICS)
TRUTH_HZ = 4800           # ground-truth cells per second (midpoint rule); switching sits on this grid
WINDOWS_PER_S = 50        # import/export split windows (one nominal mains cycle)
V_NOMINAL = 230.0
F_NOMINAL = 50.0


def profile(parts: dict[int, tuple[float, float]]) -> F64:
    """A waveform as coefficients of [cos h.theta, sin h.theta] for h in HARMONICS.

    parts maps harmonic -> (relative amplitude, phase in degrees); the shape
    is amplitude * cos(h.theta + phase).
    """
    p = np.zeros(2 * NH)
    for h, (amp, deg) in parts.items():
        i = HARMONICS.index(h)
        ph = math.radians(deg)
        p[2 * i] = amp * math.cos(ph)
        p[2 * i + 1] = -amp * math.sin(ph)
    return p


class Growing:
    """A float64 array that only grows at its end: amortised O(1) appends, read without a copy.

    The model's per-second knots and switching instants grow for as long as a run lasts; turning
    a Python list into an array after every append made each simulated second cost O(elapsed)
    (a week-long soak slowed down fivefold). A view taken before a reallocation still reads the
    values it had.
    """

    def __init__(self, values: list[float] | None = None) -> None:
        vals = list(values or [])
        self.buf = np.zeros(max(64, 2 * len(vals)))
        self.buf[:len(vals)] = vals
        self.n = len(vals)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return float(self.buf[i % self.n])

    def append(self, x: float) -> None:
        if self.n == self.buf.size:
            self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
        self.buf[self.n] = x
        self.n += 1

    def view(self) -> F64:
        return self.buf[:self.n]


class Knots:
    """Per-second random-walk knots, generated lazily and deterministically."""

    def __init__(self, first: float, step: Callable[[float], float]) -> None:
        self.values = Growing([first])
        self.step = step

    def ensure(self, k: int) -> None:
        while len(self.values) <= k + 1:
            self.values.append(self.step(self.values[-1]))

    def array(self) -> F64:
        return self.values.view()


class Mains:
    """Mains voltage: drifting frequency and amplitude, fixed harmonic content."""

    def __init__(self, rng: np.random.Generator, *, v_base: float = 232.0, drift: bool = True,
                 harmonics: dict[int, tuple[float, float]] | None = None, f0: float = F_NOMINAL,
                 f_max_dev: float = 0.5, v_tol: float = 0.1) -> None:
        self.rng = rng
        lo, hi = f0 - f_max_dev, f0 + f_max_dev
        vlo, vhi = V_NOMINAL * (1 - v_tol) + 1.0, V_NOMINAL * (1 + v_tol) - 1.0
        self.f_bounds = (lo, hi)
        if drift:
            def fstep(f: float) -> float:
                nxt = f - 0.02 * (f - f0) + float(rng.normal(0.0, 0.01))
                if nxt > hi:
                    nxt = 2 * hi - nxt
                if nxt < lo:
                    nxt = 2 * lo - nxt
                return min(max(nxt, lo), hi)

            def vstep(v: float) -> float:
                return min(max(v + 0.05 * (v_base - v) + float(rng.normal(0.0, 0.4)), vlo), vhi)
            f_first = f0 + float(rng.uniform(-0.1, 0.1))
        else:
            def fstep(f: float) -> float:
                return f

            def vstep(v: float) -> float:
                return v
            f_first = f0
        self.freq_knots = Knots(f_first, fstep)
        self.vrms_knots = Knots(v_base, vstep)
        self.theta_knots = Growing([float(rng.uniform(0, 2 * math.pi)) if drift else 0.0])
        self.shape = profile(harmonics if harmonics is not None
                             else {1: (1.0, 0.0), 3: (0.012, 180.0), 5: (0.025, 170.0), 7: (0.01, 20.0)})
        self._cache_k = -1
        self._f = np.zeros(0)
        self._v = np.zeros(0)
        self._th = np.zeros(0)

    def ensure(self, k: int) -> None:
        """Make knots for seconds 0..k+1 available."""
        if k <= self._cache_k:
            return
        self.freq_knots.ensure(k + 1)
        self.vrms_knots.ensure(k + 1)
        f = self.freq_knots.values
        while len(self.theta_knots) <= k + 2:
            j = len(self.theta_knots) - 1
            self.theta_knots.append((self.theta_knots[-1] + math.pi * (f[j] + f[j + 1])) % (2 * math.pi))
        self._f = self.freq_knots.array()
        self._v = self.vrms_knots.array()
        self._th = self.theta_knots.view()
        self._cache_k = k

    def _split(self, t: F64) -> tuple[npt.NDArray[np.int64], F64]:
        k = np.floor(t).astype(np.int64)
        self.ensure(int(k.max()) + 1)
        return k, t - k

    def theta(self, t: F64) -> F64:
        k, tau = self._split(t)
        f0 = self._f[k]
        return self._th[k] + 2 * math.pi * (f0 * tau + 0.5 * (self._f[k + 1] - f0) * tau * tau)

    def _pieces(self, t: F64) -> list[tuple[int, int, int]] | None:
        """For ascending t within two seconds: [(k, lo, hi)], t[lo:hi] in second k; else None."""
        k0 = math.floor(t[0])
        k1 = math.floor(t[-1])
        if k1 == k0:
            self.ensure(k0 + 1)
            return [(k0, 0, t.size)]
        if k1 != k0 + 1:
            return None
        self.ensure(k1 + 1)
        cut = int(np.searchsorted(t, float(k1), side="left"))
        return [(k0, 0, cut), (k1, cut, t.size)]

    def theta_vrms(self, t: F64, ascending: bool = False) -> tuple[F64, F64]:
        """theta(t) and vrms(t) in one pass.

        With `ascending`, t must be sorted: the knots are then looked up once per second
        instead of once per instant (the same numbers).
        """
        pieces = self._pieces(t) if ascending and t.size else None
        if pieces is not None:
            th = np.empty_like(t)
            vr = np.empty_like(t)
            for j, lo, hi in pieces:
                tau = t[lo:hi] - j
                f0 = self._f[j]
                th[lo:hi] = self._th[j] + 2 * math.pi * (f0 * tau + 0.5 * (self._f[j + 1] - f0) * tau * tau)
                v0 = self._v[j]
                vr[lo:hi] = v0 + (self._v[j + 1] - v0) * tau
            return th, vr
        k, tau = self._split(t)
        f0 = self._f[k]
        th = self._th[k] + 2 * math.pi * (f0 * tau + 0.5 * (self._f[k + 1] - f0) * tau * tau)
        v0 = self._v[k]
        return th, v0 + (self._v[k + 1] - v0) * tau

    def shift(self, z: npt.NDArray[np.complex128], t: F64, delta: float, k: int
              ) -> npt.NDArray[np.complex128]:
        """exp(i.theta(t + delta)) from z = exp(i.theta(t)), for t in second k.

        Inside second k, theta is the quadratic th_k + 2.pi.(f_k.tau + a.tau^2 / 2), so
        theta(tau + delta) - theta(tau) = A + B.tau exactly, with B = 2.pi.a.delta tiny
        (|B| < 1e-4 rad for delta < 1 ms): a constant rotation times exp(i.eps) with
        |eps| < 1e-4, whose series is exact to double precision after the eps^4 term.
        Instants that leave second k are computed from scratch.
        """
        self.ensure(k + 1)
        f0 = float(self._f[k])
        a = float(self._f[k + 1]) - f0
        two_pi = 2 * math.pi
        big_a = two_pi * delta * (f0 + 0.5 * a * delta)
        big_b = two_pi * a * delta
        eps = big_b * (t - (k + 0.5))
        e2 = eps * eps
        rot = complex(math.cos(big_a + 0.5 * big_b), math.sin(big_a + 0.5 * big_b))
        out = z * ((1.0 - 0.5 * e2 + e2 * e2 / 24.0) + 1j * (eps * (1.0 - e2 / 6.0))) * rot
        ts = t + delta
        lo = int(np.searchsorted(ts, float(k), side="left"))
        hi = int(np.searchsorted(ts, float(k + 1), side="left"))
        if lo > 0:
            out[:lo] = np.exp(1j * self.theta(ts[:lo]))
        if hi < ts.size:
            out[hi:] = np.exp(1j * self.theta(ts[hi:]))
        return out

    def vrms(self, t: F64, ascending: bool = False) -> F64:
        """Fundamental RMS voltage."""
        pieces = self._pieces(t) if ascending and t.size else None
        if pieces is not None:
            vr = np.empty_like(t)
            for j, lo, hi in pieces:
                v0 = self._v[j]
                vr[lo:hi] = v0 + (self._v[j + 1] - v0) * (t[lo:hi] - j)
            return vr
        k, tau = self._split(t)
        v0 = self._v[k]
        return v0 + (self._v[k + 1] - v0) * tau

    def freq(self, t: F64) -> F64:
        k, tau = self._split(t)
        f0 = self._f[k]
        return f0 + (self._f[k + 1] - f0) * tau


def basis(theta: F64) -> F64:
    """Rows cos(h.theta), sin(h.theta) for h in HARMONICS; shape (2*NH, n).

    One complex exponential, then odd powers by multiplication (cheaper than
    one cos and one sin per harmonic).
    """
    return basis_z(np.exp(1j * theta))


def basis_z(z: npt.NDArray[np.complex128]) -> F64:
    """basis() from the unit phasor z = exp(i.theta)."""
    z2 = z * z
    out = np.empty((2 * NH, z.size))
    zh = z
    for i in range(NH):
        if i:
            zh = zh * z2
        out[2 * i] = zh.real
        out[2 * i + 1] = zh.imag
    return out


class Schedule:
    """On/off state from toggle instants, extended lazily by a generator.

    `nxt(t)` returns the next (toggle instants...) after time t; the instants
    are rounded to the model's fine grid so that no cell straddles a switch.
    """

    def __init__(self, initial_on: bool, nxt: Callable[[float], list[float]] | None,
                 toggles: list[float] | None = None) -> None:
        self.initial = 1 if initial_on else 0
        self.nxt = nxt
        self.toggles = Growing(list(toggles or []))
        self.grid = 1.0 / TRUTH_HZ
        self._arr = self.toggles.view()

    def ensure(self, t_end: float) -> None:
        if self.nxt is None:
            return
        changed = False
        while not self.toggles or self.toggles[-1] <= t_end:
            last = self.toggles[-1] if self.toggles else 0.0
            for x in self.nxt(last):
                q = round(x / self.grid) * self.grid
                if self.toggles and q <= self.toggles[-1]:
                    q = self.toggles[-1] + self.grid
                self.toggles.append(q)
            changed = True
        if changed:
            self._arr = self.toggles.view()

    def on(self, t: F64) -> F64:
        self.ensure(float(t.max()))
        n = np.searchsorted(self._arr, t, side="right")
        return ((n + self.initial) & 1).astype(np.float64)

    def state_over(self, t0: float, t1: float) -> int | None:
        """1 or 0 if the load is on or off at every instant of [t0, t1], None if it switches."""
        self.ensure(t1)
        n0 = int(np.searchsorted(self._arr, t0, side="right"))
        if n0 != int(np.searchsorted(self._arr, t1, side="right")):
            return None
        return (n0 + self.initial) & 1


def always_on() -> Schedule:
    return Schedule(True, None)


def random_on_off(rng: np.random.Generator, on_mean: float, off_mean: float,
                  start_on: bool | None = None) -> Schedule:
    """Exponentially distributed on and off durations."""
    initial = bool(rng.random() < on_mean / (on_mean + off_mean)) if start_on is None else start_on
    state = {"on": initial}

    def nxt(t: float) -> list[float]:
        mean = on_mean if state["on"] else off_mean
        state["on"] = not state["on"]
        return [t + max(float(rng.exponential(mean)), 0.5)]
    return Schedule(initial, nxt)


def cycling(rng: np.random.Generator, session_mean: float, idle_mean: float, period: float,
            duty: float) -> Schedule:
    """Sessions (cooking) during which the load pulses with a fixed period and duty."""
    def nxt(t: float) -> list[float]:
        start = t + float(rng.exponential(idle_mean))
        end = start + max(float(rng.exponential(session_mean)), period)
        out: list[float] = []
        c = start
        while c < end:
            out += [c, c + period * duty]
            c += period
        return out
    return Schedule(False, nxt)


def on_between(t_on: float, t_off: float) -> Schedule:
    return Schedule(False, None, [t_on, t_off])


@dataclass
class Load:
    """A load's current: magnitude(t) (peak amps of the unit shape) times shape."""

    name: str
    kind: str
    shape: F64
    magnitude: Callable[[F64, F64], F64]   # (t, vrms) -> peak amps
    cts: dict[int, float]                   # CT index (0-based) -> +1/-1 (how the CT sees it)
    p_nominal_w: float = 0.0
    phase_deg: float = 0.0                  # supply phase lag behind the VT's phase (3-phase)
    # What `magnitude` computes, spelt out so that Model.signals can add up the loads that are
    # steadily on before it multiplies by the basis (the same numbers, far fewer array passes):
    # magnitude(t, vrms) = on(t) * coef * law, law "v": vrms; "inv_v": 1 / vrms;
    # "sky": clear_sky(t, *sky) / vrms; "dark": (clear_sky(t, *sky) <= 0) / vrms. "" = opaque.
    sched: Schedule | None = None           # None: always on
    coef: float = 0.0
    law: str = ""
    sky: tuple[float, float] = (0.0, 0.0)   # (start_of_day_s, peak_w) of the sky laws


def resistive(name: str, p_w: float, sched: Schedule, cts: dict[int, float], mains: Mains) -> Load:
    g = p_w / V_NOMINAL ** 2   # conductance

    def mag(t: F64, vrms: F64) -> F64:
        return sched.on(t) * math.sqrt(2) * vrms * g
    return Load(name, "resistive", mains.shape.copy(), mag, cts, p_w, sched=sched, coef=math.sqrt(2) * g,
                law="v")


def inductive(name: str, p_w: float, pf: float, sched: Schedule, cts: dict[int, float]) -> Load:
    """Constant impedance with power factor pf (current lags)."""
    y = p_w / (V_NOMINAL ** 2 * pf)
    phi = math.degrees(math.acos(pf))

    def mag(t: F64, vrms: F64) -> F64:
        return sched.on(t) * math.sqrt(2) * vrms * y
    return Load(name, "inductive", profile({1: (1.0, -phi)}), mag, cts, p_w, sched=sched,
                coef=math.sqrt(2) * y, law="v")


def constant_power(name: str, kind: str, p_w: float, pf: float, sched: Schedule, cts: dict[int, float],
                   leading: bool = False, harm: dict[int, tuple[float, float]] | None = None) -> Load:
    """Electronic load drawing p_w whatever the voltage (SMPS, induction hob, heat pump)."""
    phi = math.degrees(math.acos(pf)) * (1 if leading else -1)
    parts = {1: (1.0, phi)}
    parts.update(harm or {})

    def mag(t: F64, vrms: F64) -> F64:
        return sched.on(t) * math.sqrt(2) * p_w / (vrms * pf)
    return Load(name, kind, profile(parts), mag, cts, p_w, sched=sched, coef=math.sqrt(2) * p_w / pf,
                law="inv_v")


SUNRISE_H = 6.5   # the clear-sky bell of the PV model
SUNSET_H = 19.5
SKY_MARGIN_S = 100.0   # the ADC interpolates the PV bell this far from sunrise and sunset (model.py)
_SKY_CACHE: list[tuple[F64, float, float, F64]] = []


def clear_sky(t: F64, start_of_day_s: float, peak_w: float, sunrise_h: float = SUNRISE_H,
              sunset_h: float = SUNSET_H) -> F64:
    """PV AC output of a clear day: a sine bell between sunrise and sunset, ^1.3."""
    # the generation and standby parts of one inverter ask for the same t in a row
    for ct, cs, cp, cv in _SKY_CACHE:
        if ct is t and cs == start_of_day_s and cp == peak_w:
            return cv
    out = _clear_sky(t, start_of_day_s, peak_w, sunrise_h, sunset_h)
    _SKY_CACHE[:] = [(t, start_of_day_s, peak_w, out)]
    return out


def _clear_sky(t: F64, start_of_day_s: float, peak_w: float, sunrise_h: float, sunset_h: float) -> F64:
    hod = ((t + start_of_day_s) / 3600.0) % 24.0
    x = (hod - sunrise_h) / (sunset_h - sunrise_h)
    bell = np.where((x > 0) & (x < 1), np.sin(np.pi * np.clip(x, 0, 1)), 0.0)
    return peak_w * bell ** 1.3


def sky_state(t0: float, t1: float, start_of_day_s: float, sunrise_h: float = SUNRISE_H,
              sunset_h: float = SUNSET_H) -> int | None:
    """0 if it is dark all through [t0, t1], 1 if light all through, None otherwise (or unsure)."""
    if not 0.0 <= t1 - t0 < 3600.0:
        return None
    x = (((np.asarray([t0, t1]) + start_of_day_s) / 3600.0) % 24.0 - sunrise_h) / (sunset_h - sunrise_h)
    light = (x > 0) & (x < 1)
    if light.all():
        return 1
    if not light.any() and not (x[0] <= 0 and x[1] >= 1):
        return 0
    return None


def pv_inverter(peak_w: float, start_of_day_s: float, cts: dict[int, float],
                standby_w: float = 45.0) -> list[Load]:
    """Generation (exported, negative import) by day; a standby draw when dark."""
    def gen(t: F64, vrms: F64) -> F64:
        return -math.sqrt(2) * clear_sky(t, start_of_day_s, peak_w) / vrms

    pf_sb = 0.9

    def standby(t: F64, vrms: F64) -> F64:
        dark = clear_sky(t, start_of_day_s, peak_w) <= 0.0
        return dark * math.sqrt(2) * standby_w / (vrms * pf_sb)
    return [
        Load("pv-inverter", "pv", profile({1: (1.0, 0.0), 5: (0.01, 0.0), 7: (0.008, 0.0)}), gen, cts,
             peak_w, coef=-math.sqrt(2), law="sky", sky=(start_of_day_s, peak_w)),
        Load("pv-standby", "standby", profile({1: (1.0, math.degrees(math.acos(pf_sb)))}), standby, cts,
             standby_w, coef=math.sqrt(2) * standby_w / pf_sb, law="dark", sky=(start_of_day_s, peak_w)),
    ]


def battery(name: str, power_w: Callable[[], float], cts: dict[int, float]) -> Load:
    """A home battery's inverter on the AC side: draws power_w() (+ charging, - discharging) at unity
    PF. power_w is read each time the model computes a block, so the live state of an inverter
    simulator (gridtap_sim.luxpower.Inverter.ac_power) drives it: what a controller does to the
    inverter shows up on the CTs the battery is routed to."""
    def mag(t: F64, vrms: F64) -> F64:
        return math.sqrt(2) * power_w() / vrms * np.ones_like(t)
    return Load(name, "battery", profile({1: (1.0, 0.0)}), mag, cts, 0.0)


def reactive(name: str, q_var: Callable[[], float], cts: dict[int, float]) -> Load:
    """A pure reactive current: q_var() var (+ lagging, inductive; - leading), read each block like
    `battery`, so an inverter simulator's reactive power (gridtap_sim.luxpower.Inverter.q_var) shows
    up in the CTs' var."""
    def mag(t: F64, vrms: F64) -> F64:
        return math.sqrt(2) * q_var() / vrms * np.ones_like(t)
    return Load(name, "reactive", profile({1: (1.0, -90.0)}), mag, cts, 0.0)


def ev_charger(name: str, power_w: Callable[[F64], F64], cts: dict[int, float], max_w: float) -> Load:
    """A wallbox charging an EV: a resistive-looking load whose power the simulator decides.

    `power_w(t)` comes from the wallbox simulator (gridtap_sim.wallbox), which follows the
    charging profile the central system sets: the EV closes the loop through the grid CT.
    """
    def mag(t: F64, vrms: F64) -> F64:
        return math.sqrt(2) * power_w(t) / vrms
    return Load(name, "ev", profile({1: (1.0, 0.0), 3: (0.02, 0.0)}), mag, cts, max_w)


@dataclass
class Outages:
    """Mains failures [(t_fail, t_restore)], sorted, on the fine grid."""

    spans: list[tuple[float, float]] = field(default_factory=list)

    def on(self, t: F64) -> F64:
        if not self.spans:
            return np.ones(t.size)
        # only the failures that overlap these instants (a run may have thousands): those that
        # ended before them add two edges each and change no parity
        i = bisect_right(self.spans, float(t.min()), key=lambda sp: sp[1])
        j = bisect_right(self.spans, float(t.max()), key=lambda sp: sp[0])
        if i >= j:
            return np.ones(t.size)
        edges = np.asarray(self.spans[i:j]).ravel()   # fail, restore, fail, restore...
        n = np.searchsorted(edges, t, side="right")
        return (n % 2 == 0).astype(np.float64)

    def failing_between(self, a: float, b: float) -> list[tuple[float, float]]:
        i = bisect_left(self.spans, a, key=lambda sp: sp[0])
        j = bisect_left(self.spans, b, key=lambda sp: sp[0])
        return self.spans[i:j]


@dataclass
class Chunk:
    """One simulated second: ADC sets and the ground truth of that second."""

    k: int
    samples: npt.NDArray[np.uint16]   # (sets_per_s, n_channels), interleaved V, CT1..
    e_imp: F64                         # (n_ct,) J imported (positive 20 ms windows)
    e_exp: F64                         # (n_ct,) J exported (magnitude of negative windows)
    e_net: F64                         # (n_ct,) J net, = e_imp - e_exp
    window_e: F64                      # (WINDOWS_PER_S, n_ct) J per 20 ms window
    vrms: float                        # true RMS of v(t) over the second
    irms: F64                          # (n_ct,) true RMS currents
    freq: float                        # mean frequency over the second
    e_q: F64                           # (n_ct,) var.s net: current times its line's V a quarter period later


class Model:
    """Mains + loads + transducers + ADC for one board and one scenario."""

    def __init__(self, board: Board, mains: Mains, loads: list[Load], rng: np.random.Generator,
                 outages: Outages | None = None, adc: bool = True,
                 ct_phase_deg: list[float] | None = None) -> None:
        self.board = board
        self.mains = mains
        self.loads = loads
        self.outages = outages or Outages()
        self.adc_enabled = adc
        self.fs = board.sets_per_s
        self.nch = board.n_channels
        self.nct = self.nch - 1
        sim = board.sim
        self.noise_rng = np.random.default_rng(rng.integers(1 << 62))
        enob = float(sim["enob"])
        extra = board.bits - enob
        self.noise_sd = math.sqrt(max(4.0 ** extra - 1.0, 0.0) / 12.0)
        self.offset = rng.normal(0.0, float(sim["adc_offset_counts_sd"]), self.nch)
        self.gain = 1.0 + rng.normal(0.0, float(sim["gain_error_sd"]), self.nch)
        lead = [float(sim["vt_lead_deg"])] + [float(sim["ct_lead_deg"])] * self.nct
        self.lead_s = np.asarray(lead) / 360.0 / F_NOMINAL
        self.scale = np.asarray([1.0 / float(c.get("v_per_count") or c.get("a_per_count"))
                                 for c in board.channels])
        sat = sim.get("ct_saturation_a")
        self.sat_a = float(sat) if sat else None
        self.shapes = np.stack([ld.shape for ld in loads]) if loads else np.zeros((0, 2 * NH))
        self.route = np.zeros((self.nct, len(loads)))
        for j, ld in enumerate(loads):
            for c, sign in ld.cts.items():
                if c < self.nct:
                    self.route[c, j] = sign
        self.vmax = (1 << board.bits) - 1
        self.ct_phase = np.radians(np.asarray((ct_phase_deg or [0.0] * self.nct)[: self.nct]))
        self.load_phase = np.radians(np.asarray([ld.phase_deg for ld in loads]))
        self.grouped = True      # False: every load the generic way (the reference for tests)
        self._sky_ref: dict[tuple[float, float], tuple[F64, F64, F64]] = {}
        self._sky_collect = False
        self._used_all = np.flatnonzero(np.any(self.route != 0, axis=0))
        self._used_ct = {c: np.flatnonzero(self.route[c] != 0) for c in range(self.nct)}
        self._plans: dict[tuple[int | None, tuple[int | None, ...]], tuple[
            list[tuple[tuple[float, str, tuple[float, float]], F64]], list[int]]] = {}

    # -- continuous signals -------------------------------------------------
    def signals(self, t: F64, ct: int | None = None, want_v: bool = True,
                z: npt.NDArray[np.complex128] | None = None, ascending: bool = False) -> tuple[F64, F64]:
        """Primary v(t) (volts) and CT currents (n_ct, n) in amps at instants t.

        With `ct` given only that CT's current is computed (row 0 of the result);
        with want_v False, v is not computed (an empty array). z, if given, is
        exp(i.theta(t)) already known; the phasor used is left in `_last_z`. `ascending`:
        t is sorted (saves work, same numbers).
        """
        if z is None:
            th, vr = self.mains.theta_vrms(t, ascending)
            z = np.exp(1j * th)
        else:
            vr = self.mains.vrms(t, ascending)
        self._last_z = z
        b = basis_z(z)
        live = self.outages.on(t) if self.outages.spans else None
        v = math.sqrt(2) * vr * (self.mains.shape @ b) if want_v else np.zeros(0)
        route = self.route if ct is None else self.route[ct:ct + 1]
        used = self._used_all if ct is None else self._used_ct.get(ct)
        if used is None:
            used = np.flatnonzero(np.any(route != 0, axis=0))
        i = np.zeros((route.shape[0], t.size))
        if used.size:
            groups, generic = self._plan(used, route, ct, float(t.min()), float(t.max()))
            bases = {0.0: b}
            laws: dict[tuple[str, tuple[float, float]], F64] = {}
            for (ph, law, sky), acc in groups:
                bp = bases.get(ph)
                if bp is None:
                    bp = bases[ph] = basis_z(z * complex(math.cos(ph), -math.sin(ph)))
                fac = laws.get((law, sky))
                if fac is None:
                    fac = laws[(law, sky)] = self._law(law, sky, t, vr)
                i += (acc @ bp) * fac
            for j in generic:
                ph = self.load_phase[j]
                bp = bases.get(ph)
                if bp is None:
                    bp = bases[ph] = basis_z(z * complex(math.cos(ph), -math.sin(ph)))
                unit = self.shapes[j] @ bp
                i += route[:, j:j + 1] * (unit * self.loads[j].magnitude(t, vr))
        self._last_vr = vr
        self._last_live = live
        if live is not None:
            v = v * live if want_v else v
            i = i * live
        return v, i

    def _law(self, law: str, sky: tuple[float, float], t: F64, vr: F64) -> F64:
        if law == "v":
            return vr
        if law == "inv_v":
            return 1.0 / vr
        # the grouped path uses the sky laws only where sky_state is certain: "sky" while it is
        # light all through (no clipping to do), "dark" while it is dark all through
        if law == "sky":
            return self._sky_light(sky, t) / vr
        return 1.0 / vr

    def _sky_light(self, sky: tuple[float, float], t: F64) -> F64:
        """clear_sky(t) while it is light all through t (the bell needs no clipping).

        chunk() computes it on the truth grid and keeps it in `_sky_ref`; the ADC channels'
        instants are that grid shifted by less than a cell, so they interpolate linearly
        between its points instead of another sine and power. The bell is so smooth that
        the error, h^2.|sky''| with h = 1/4800 s, stays below 2e-12 of the PV output as long
        as sunrise and sunset are SKY_MARGIN_S away (else it is computed from scratch).
        """
        ref = self._sky_ref.get(sky)
        if ref is not None and ref[0].size == t.size >= 2:
            t_ref, p_ref, d_ref = ref
            h = float(t_ref[1] - t_ref[0])
            w = float(t[0] - t_ref[0]) / h
            if abs(w) <= 1.0 and abs(float(t[-1] - t_ref[-1]) - w * h) < 1e-9:
                return p_ref + w * d_ref
        hod = ((t + sky[0]) / 3600.0) % 24.0
        out: F64 = sky[1] * np.sin(np.pi * ((hod - SUNRISE_H) / (SUNSET_H - SUNRISE_H))) ** 1.3
        if self._sky_collect and t.size >= 2:
            x0, x1 = ((float(hod[0]) - SUNRISE_H) * 3600.0, (SUNSET_H - float(hod[-1])) * 3600.0)
            if min(x0, x1) >= SKY_MARGIN_S and float(t[-1] - t[0]) < 3600.0:
                d = np.empty_like(out)
                np.subtract(out[1:], out[:-1], out=d[:-1])
                d[-1] = d[-2]
                self._sky_ref[sky] = (t, out, d)
        return out

    def _plan(self, used: npt.NDArray[np.intp], route: F64, ct: int | None, t0: float, t1: float
              ) -> tuple[list[tuple[tuple[float, str, tuple[float, float]], F64]], list[int]]:
        """Loads steadily on over [t0, t1], summed per (phase, law): route x coef x shape.

        Loads that switch inside the interval (or have no stated law) go the generic way.
        """
        states = []
        for j in used.tolist():
            ld = self.loads[j]
            if not ld.law:
                st: int | None = None
            elif not self.grouped:
                st = None
            elif ld.law in ("sky", "dark"):
                light = sky_state(t0, t1, ld.sky[0])
                st = None if light is None else int(light == (ld.law == "sky"))
            else:
                st = 1 if ld.sched is None else ld.sched.state_over(t0, t1)
            states.append(st)
        key = (ct, tuple(states))
        hit = self._plans.get(key)
        if hit is not None:
            return hit
        acc: dict[tuple[float, str, tuple[float, float]], F64] = {}
        generic: list[int] = []
        for j, st in zip(used.tolist(), states, strict=True):
            if st == 0:
                continue
            if st is None:
                generic.append(j)
                continue
            ld = self.loads[j]
            g = (float(self.load_phase[j]), ld.law, ld.sky)
            term = np.outer(route[:, j] * ld.coef, self.shapes[j])
            acc[g] = acc[g] + term if g in acc else term
        plan = (list(acc.items()), generic)
        if len(self._plans) > 4096:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def chunk(self, k: int) -> Chunk:
        fs = self.fs
        # ground truth: midpoint rule on the fine grid
        nf = TRUTH_HZ
        tf = k + (np.arange(nf) + 0.5) / nf
        self._sky_ref = {}
        self._sky_collect = True
        v, i = self.signals(tf, ascending=True)
        self._sky_collect = False
        truth_z = self._last_z
        vct = np.empty_like(i)                                 # each CT's own phase voltage
        vq = np.empty_like(i)                                  # ... a quarter period later
        for c in range(self.nct):
            if self.ct_phase[c] == 0:
                vct[c] = v
            else:
                vct[c] = self._line_v(float(self.ct_phase[c]))
            vq[c] = self._line_v(float(self.ct_phase[c]) + 0.5 * math.pi)
        e_q = np.mean(vq * i, axis=1)                          # var.s over the second
        p = vct * i                                            # (n_ct, nf)
        win = p.reshape(self.nct, WINDOWS_PER_S, -1).sum(axis=2) / nf   # J per window
        e_net = win.sum(axis=1)
        e_imp = np.where(win > 0, win, 0.0).sum(axis=1)
        e_exp = np.where(win < 0, -win, 0.0).sum(axis=1)
        vrms = float(np.sqrt(np.mean(v * v)))
        irms = np.sqrt(np.mean(i * i, axis=1))
        freq = float(0.5 * (self.mains.freq(np.asarray([float(k)]))[0]
                            + self.mains.freq(np.asarray([k + 1 - 1e-9]))[0]))
        if self.adc_enabled:
            tn = k + np.arange(fs) / fs
            x = np.empty((self.nch, fs))
            # each channel's mains phasor is the previous one's, turned by its time offset
            # (Mains.shift); the first is the truth grid's when the grids line up
            if fs == nf:
                base_t, base_z = tf, truth_z
            else:
                base_t = tn + self.lead_s[0]
                base_z = np.exp(1j * self.mains.theta(base_t))
            for c in range(self.nch):
                ts = tn + c * self.board.slot_s + self.lead_s[c]
                z = self.mains.shift(base_z, base_t, float(ts[0] - base_t[0]), k)
                if c == 0:
                    x[0] = self.signals(ts, ct=-1, z=z, ascending=True)[0]
                else:
                    xc = self.signals(ts, ct=c - 1, want_v=False, z=z, ascending=True)[1][0]
                    x[c] = self._saturate(xc) if self.sat_a is not None else xc
                base_t, base_z = ts, z
            samples = np.ascontiguousarray(self._adc_all(x).T)
        else:
            samples = np.zeros((fs, self.nch), dtype=np.uint16)
        return Chunk(k, samples, e_imp, e_exp, e_net, win.T.copy(), vrms, irms, freq, e_q)

    def _line_v(self, ph: float) -> F64:
        """v on the truth grid of the last signals() call, every harmonic h turned back by
        h.ph: the VT line's voltage ph radians of the fundamental later (a line lagging by ph,
        or with ph + pi/2 the quarter-period delay that defines reactive power)."""
        bp = basis_z(self._last_z * complex(math.cos(ph), -math.sin(ph)))
        vp = math.sqrt(2) * self._last_vr * (self.mains.shape @ bp)
        return vp if self._last_live is None else vp * self._last_live

    def _adc_all(self, x: F64) -> npt.NDArray[np.uint16]:
        """_adc for every channel at once (rows of x); the noise comes in the same order."""
        counts = (self.board.midscale + self.offset[:, None]) + x * self.gain[:, None] * self.scale[:, None]
        counts = counts + self.noise_rng.normal(0.0, self.noise_sd, x.shape)
        return np.clip(np.rint(counts), 0, self.vmax).astype(np.uint16)

    def _saturate(self, x: F64) -> F64:
        assert self.sat_a is not None
        knee = 0.8 * self.sat_a
        span = self.sat_a - knee
        ax = np.abs(x)
        over = ax > knee
        out = x.copy()
        out[over] = np.sign(x[over]) * (knee + span * np.tanh((ax[over] - knee) / span))
        return out
