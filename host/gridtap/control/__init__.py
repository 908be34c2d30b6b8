"""Acting on devices (issue #16): price-driven policies and the planner, the LuxPower inverter controller;
EV charging over OCPP (ev/, issue #18).

The shared types are in `gridtap.control.decision`.
"""
