"""gridtap: the host side of an open home energy metering stack."""

__version__ = "0.1.0"
