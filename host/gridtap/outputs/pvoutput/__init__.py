"""PVOutput uploads: settings, uploader, backlog (see uploader.py for the daemon interface)."""

from gridtap.outputs.pvoutput.settings import KEY_ENV, FieldSource, PVOutputSettings, Secret, parse_settings
from gridtap.outputs.pvoutput.uploader import PVOutputUploader

# gridtap.config hands the [pvoutput] section to `parse_config`.
parse_config = parse_settings

__all__ = ["KEY_ENV", "FieldSource", "PVOutputSettings", "PVOutputUploader", "Secret", "parse_config",
           "parse_settings"]
