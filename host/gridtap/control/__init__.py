"""Acting on devices (issue #16): price-driven policies and the planner, the LuxPower inverter controller.

The shared types are in `gridtap.control.decision`.
"""
