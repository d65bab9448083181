# MicroPython user C module `bms_native` for make-based ports (unix):
#   make -C ports/unix USER_C_MODULES=<dir holding bms_native/ (and ulab's code/ as ulab/)>
# Add CFLAGS_EXTRA=-DBMS_REAL_DOUBLE for a double-precision filter (default: float32).
BMS_NATIVE_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(BMS_NATIVE_MOD_DIR)/modbms_native.c
SRC_USERMOD_LIB_C += $(BMS_NATIVE_MOD_DIR)/ukf_core.c
SRC_USERMOD_LIB_C += $(BMS_NATIVE_MOD_DIR)/sop_core.c

CFLAGS_USERMOD += -I$(BMS_NATIVE_MOD_DIR)
