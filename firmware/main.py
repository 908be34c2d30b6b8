# Board entry point (copied to the Pico's filesystem with board.json).
import gc

# While the firmware is imported and the app built, collect every 8 KB, so
# that what lives for ever packs at the bottom of the heap and the collections
# of the running firmware sweep only the blocks above it (gridtap_fw.app turns
# this off when it is built; hardware/qemu-m0.md).
gc.threshold(8192)

from gridtap_fw import app, hal_rp2  # noqa: E402

app.App(hal_rp2.Rp2Hal()).run()
