"""Where the data goes: MQTT, the Flukso uploader, PVOutput and the REST API."""
