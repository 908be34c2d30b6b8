"""The CUSTOM_RULES blocks of the seed document (/work/shared/seeds/flukso-v2-v3-custom-rules-pvoutput.txt),
verbatim as Flukso V2/V3 users run them with FluksoToPvoutput: for the rules tests, the PVOutput
uploader's tests and bench_rules."""

from __future__ import annotations

# FLM02, two clamps (v2 PV inverter, v4 mains): the sign-blind inverter clamp reads the inverter's
# 45 W standby draw as generation; these rules zero it and move it to consumption.
FLM02 = '''CUSTOM_RULES = {
  "v4": ["v4 * 0.89", "(v4 + v2) if v2 < 50 else v4"],
  "v2": ["v2 * 0.89", "0 if v2 < 50 else v2"],
  "v11": ["v2 - v4 if v2 > v4 else 0.0001"],
  "v12": ["v4 - v2 if v4 > v2 else 0.0001"],
}
'''

FLM03_TWO_CLAMPS = '''CUSTOM_RULES = {
    "v6": ["v6 * 1.126"],
    "v2": ["v2 * 0.89"],
    "v12": ["v12 * 0.89"],
    "v4": ["v4 * 0.89", "v4 + v12"],
}
'''

FLM03_GRID_INVERTER = '''CUSTOM_RULES = {
    "v2": ["v2 * 0.89"],
    "v6": ["v6 * 1.154"],
    "v11": ["v11 * 0.89"],
    "v12": ["v12 * 0.89"],
    "v4": ["v2 + v11 - v12"],
}
'''
