# Board entry point (copied to the Pico's filesystem with board.json).
from gridtap_fw import app, hal_rp2

app.App(hal_rp2.Rp2Hal()).run()
