"""The link to the sensor board: serial line, frame codec, the board session and the command client."""
