# When to write the counters to EEPROM outside a brownout.
#
# The brownout save is the one that keeps counters exact across an outage;
# this policy only bounds what a crash without warning (watchdog, firmware
# fault, a supply monitor that failed) can lose, while keeping EEPROM wear
# tiny. A save is due when any register (import or export mWh of a CT, or a
# pulse input's total in thousandths) has grown by save_wh since the last
# save, or when save_min minutes have passed and anything changed at all.
# Pure integer logic, no HAL: bench/bench_firmware.py runs this very class
# over a simulated year.


class SavePolicy:
    def __init__(self, save_wh: int, save_min: int) -> None:
        self.save_wh = save_wh
        self.save_min = save_min
        self.last: list | None = None  # register values at the last save
        self.t_ms = 0  # uptime ms of the last save

    def saved(self, now_ms: int, values) -> None:
        self.last = list(values)
        self.t_ms = now_ms

    def due(self, now_ms: int, values) -> bool:
        last = self.last
        if last is None or len(last) != len(values):
            return True
        limit = self.save_wh * 1000
        changed = False
        for j in range(len(values)):
            d = values[j] - last[j]
            if d >= limit:
                return True
            if d:
                changed = True
        return changed and now_ms - self.t_ms >= self.save_min * 60000
