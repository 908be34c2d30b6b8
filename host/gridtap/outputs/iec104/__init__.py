"""IEC 60870-5-104 server for grid-operator telecontrol (Fluvius Netflex), pure Python on asyncio.

codec: APCI/ASDU bytes; link: the connection (windows, timers, one station at a time);
netflex: the data model and the commanded state; settings: [iec104]; output: the daemon output.
The protocol subset, the default IOA map and commissioning are in docs/iec104.md.
"""
