"""The LuxPower inverter's local protocol (its WiFi datalogger's TCP port 8000): frames, client, config.

docs/luxpower.md documents the protocol byte by byte; `frame` encodes and decodes, `client` keeps one
connection to a datalogger, `registers` names the registers gridtap reads and writes.
"""
