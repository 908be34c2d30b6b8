# Make fragment for ports built with make (e.g. unix):
#   make -C ports/unix USER_C_MODULES=/path/to/gridtap/native/mpy_module/..
# USER_C_MODULES names the directory that CONTAINS this module's directory.
GTKERNEL_MOD_DIR := $(USERMOD_DIR)
GTKERNEL_NATIVE_DIR := $(GTKERNEL_MOD_DIR)/..

SRC_USERMOD_C += $(GTKERNEL_MOD_DIR)/gtkernel.c
SRC_USERMOD_C += $(GTKERNEL_MOD_DIR)/gtkernel_args.c
SRC_USERMOD_LIB_C += $(GTKERNEL_NATIVE_DIR)/gt_kernel.c

CFLAGS_USERMOD += -I$(GTKERNEL_MOD_DIR) -I$(GTKERNEL_NATIVE_DIR)
