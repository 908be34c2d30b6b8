"""gridtap hub: the community side of Flukso, self-hosted on PostgreSQL and MQTT (docs/hub.md).

Installed with the ``[hub]`` extra; nothing in the daemon (``gridtap``) imports it.
"""

DSN_ENV = "GRIDTAP_HUB_DSN"
