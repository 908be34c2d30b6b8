"""PVOutput uploads: settings, uploader, backlog; output.py is the daemon's [pvoutput] output."""

from gridtap.outputs.pvoutput.settings import KEY_ENV, FieldSource, PVOutputSettings, Secret, parse_settings
from gridtap.outputs.pvoutput.uploader import PVOutputUploader

__all__ = ["KEY_ENV", "FieldSource", "PVOutputSettings", "PVOutputUploader", "Secret", "parse_settings"]
