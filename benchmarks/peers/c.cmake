# Hand-written C baselines: the same echo protocol with nothing between the loop and
# the kernel, to show the limit of each IO model that weft's backends are measured
# against. c_epoll_echo needs only libc; c_uring_echo needs liburing (liburing-dev).
set(_weft_peers_dir ${CMAKE_BINARY_DIR}/benchmarks/peers)

add_executable(c_epoll_echo ${CMAKE_CURRENT_LIST_DIR}/c_epoll_echo.c)
set_target_properties(c_epoll_echo PROPERTIES
  C_STANDARD 11
  C_STANDARD_REQUIRED ON
  RUNTIME_OUTPUT_DIRECTORY ${_weft_peers_dir})
target_link_libraries(c_epoll_echo PRIVATE weft_warnings)

if(URING_FOUND)
  add_executable(c_uring_echo ${CMAKE_CURRENT_LIST_DIR}/c_uring_echo.c)
  set_target_properties(c_uring_echo PROPERTIES
    C_STANDARD 11
    C_STANDARD_REQUIRED ON
    RUNTIME_OUTPUT_DIRECTORY ${_weft_peers_dir})
  target_link_libraries(c_uring_echo PRIVATE PkgConfig::URING weft_warnings)
else()
  message(STATUS "peer c_uring_echo skipped: liburing-dev not found")
endif()
