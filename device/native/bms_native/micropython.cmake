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
