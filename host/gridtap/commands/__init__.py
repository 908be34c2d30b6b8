"""The `gridtap` subcommands, one module each; cli.py registers them."""
