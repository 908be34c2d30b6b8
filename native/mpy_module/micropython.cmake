# CMake fragment for ports built with CMake (rp2, esp32):
#   make -C ports/rp2 BOARD=RPI_PICO USER_C_MODULES=/path/to/gridtap/native/mpy_module/micropython.cmake
add_library(usermod_gtkernel INTERFACE)

target_sources(usermod_gtkernel INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/gtkernel.c
    ${CMAKE_CURRENT_LIST_DIR}/gtkernel_args.c
    ${CMAKE_CURRENT_LIST_DIR}/../gt_kernel.c
)

target_include_directories(usermod_gtkernel INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
    ${CMAKE_CURRENT_LIST_DIR}/..
)

target_link_libraries(usermod INTERFACE usermod_gtkernel)
