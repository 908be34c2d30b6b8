"""Random S0 pulse trains with contact bounce, shared by the CPython and MicroPython tests."""


class Lcg:
    def __init__(self, seed: int) -> None:
        self.s = seed & 0x7FFFFFFF

    def below(self, n: int) -> int:
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


def train(seed: int, n: int, bounce_us: int, min_width_us: int = 30000, min_gap_us: int = 30000) -> list:
    """Edges (t_us, level) of n active-low pulses. Each press and each release
    bounces for up to bounce_us: extra edges, ending in the new level."""
    r = Lcg(seed)
    edges = []
    t = 1000000
    for _ in range(n):
        for level in (0, 1):
            edges.append((t, level))
            k = r.below(5)
            times = sorted(t + 1 + r.below(bounce_us) for _ in range(2 * k)) if bounce_us else []
            for j, tb in enumerate(times):
                edges.append((tb, level if j % 2 else 1 - level))
            t += (min_width_us if level == 0 else min_gap_us) + bounce_us + r.below(70000)
    return edges


def count(inp, edges: list, poll_every_us: int = 0) -> int:
    """Feed edges (and polls in between) to a PulseInput; return its pulse count."""
    next_poll = edges[0][0] if edges else 0
    for t, level in edges:
        while poll_every_us and next_poll < t:
            inp.poll(next_poll)
            next_poll += poll_every_us
        inp.edge(t, level)
    inp.poll(edges[-1][0] + 1000000)
    return inp.pulses
