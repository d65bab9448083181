# All of this project's user C modules for one firmware (rp2, esp32):
#   make -C ports/rp2 BOARD=RPI_PICO USER_C_MODULES=<repo>/device/native/micropython.cmake \
#        ULAB_DIR=<your ulab checkout>
# ulab keeps its micropython.cmake in code/; ULAB_DIR comes from the environment or
# the command line (the Makefile's `firmware` target passes it).
if(NOT ULAB_DIR)
    set(ULAB_DIR $ENV{ULAB_DIR})
endif()
if(ULAB_DIR)
    include(${ULAB_DIR}/code/micropython.cmake)
else()
    message(WARNING "ULAB_DIR not set: building bms_native without ulab")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/bms_native/micropython.cmake)
