"""The user's override of any policy, set from MQTT / Home Assistant command entities.

`Override(policy)` is itself a policy. While `charge` is on (the HA switch "AC charge override"),
the battery charges from the grid until the SOC reaches `soc_target` (the HA number, default 100 %),
then holds; switched off, the wrapped policy decides again. An unknown SOC while the override is on
still charges (the user asked for it; the inverter's own AC-charge SOC limit stops it).
"""

from __future__ import annotations

import threading

from gridtap.control.controller import DecidesPolicy
from gridtap.control.decision import ControlContext, Decision, InverterState


class Override:
    def __init__(self, policy: DecidesPolicy | None, soc_target: float = 100.0) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.charge = False
        self.soc_target = soc_target

    def set_charge(self, on: bool) -> None:
        with self.lock:
            self.charge = on

    def set_soc_target(self, pct: float) -> None:
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"SOC target {pct} is not within 0..100 %")
        with self.lock:
            self.soc_target = pct

    def decide(self, ctx: ControlContext) -> Decision:
        with self.lock:
            charge, target = self.charge, self.soc_target
        if charge:
            if ctx.soc_pct is not None and ctx.soc_pct >= target:
                return Decision(InverterState(), f"override: SOC {ctx.soc_pct:.0f} % reached the target "
                                f"{target:.0f} %", "override")
            soc = "unknown" if ctx.soc_pct is None else f"{ctx.soc_pct:.0f} %"
            return Decision(InverterState(ac_charge=True), f"override: charge to {target:.0f} % (SOC {soc})",
                            "override")
        if self.policy is None:
            return Decision(InverterState(), "no policy configured and no override", "policy")
        return self.policy.decide(ctx)
