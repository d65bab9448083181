# MicroPython user C module `bms_native` for CMake-based ports (rp2, esp32).
# Included from device/native/micropython.cmake, next to ulab.
add_library(usermod_bms_native INTERFACE)

target_sources(usermod_bms_native INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modbms_native.c
    ${CMAKE_CURRENT_LIST_DIR}/ukf_core.c
    ${CMAKE_CURRENT_LIST_DIR}/sop_core.c
)

target_include_directories(usermod_bms_native INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

target_link_libraries(usermod INTERFACE usermod_bms_native)

# MicroPython's garbage collector marks with a stack of 64 entries by default; the BMS's
# object graph (a 16-cell pack's estimators, the drivers, the module dicts) overflows it
# on every collection, and each overflow re-scans the whole heap: on the RP2040 that
# doubled a collection (about 12 -> 25 ms, in the estimator tick). 512 entries (1 KB of
# static RAM) never overflow there. rp2 boards with PSRAM set their own (1024); the RP2040
# has none, so the value is set for it only.
if(PICO_PLATFORM STREQUAL "rp2040")
    target_compile_definitions(usermod_bms_native INTERFACE MICROPY_ALLOC_GC_STACK_SIZE=512)
endif()
