"""EV charging: charging rules, load management and the OCPP 1.6J central system (docs/ev.md).

Only `cs` needs the optional `ocpp`/`websockets` packages; nothing here imports it eagerly.
"""
