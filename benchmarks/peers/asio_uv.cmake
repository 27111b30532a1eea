# Peer echo servers on standalone Asio (asio_echo, asio_uring_echo) and libuv (uv_echo).
# Included from benchmarks/peers/CMakeLists.txt. Each is built only when its Debian
# package is installed; a missing one is reported, never skipped silently. Optimisation
# comes from CMAKE_BUILD_TYPE (benchmark with Release), as for weft's own benchmarks.

set(_peers_out ${CMAKE_BINARY_DIR}/benchmarks/peers)

# --- Asio (header-only, Boost-free: Debian's libasio-dev) --------------------------------
find_path(ASIO_INCLUDE_DIR asio.hpp)
if(ASIO_INCLUDE_DIR)
  # Both flavours share everything but the backend, so the setup is one function.
  function(weft_add_asio_peer name)
    add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/asio_echo.cpp)
    # SYSTEM: Asio's own warnings are not ours to fix.
    target_include_directories(${name} SYSTEM PRIVATE ${ASIO_INCLUDE_DIR})
    target_compile_features(${name} PRIVATE cxx_std_20)
    # ASIO_NO_DEPRECATED: only the current API; no Boost, no separate compilation.
    target_compile_definitions(${name} PRIVATE ASIO_STANDALONE ASIO_NO_DEPRECATED)
    target_link_libraries(${name} PRIVATE Threads::Threads weft_warnings)
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${_peers_out})
  endfunction()

  weft_add_asio_peer(asio_echo)

  # io_uring flavour: with epoll disabled, ASIO_HAS_IO_URING makes io_uring Asio's
  # default backend for sockets, timers and signals (Asio >= 1.21; earlier versions
  # ignore the macro and would silently fall back to select, hence the version check).
  file(STRINGS ${ASIO_INCLUDE_DIR}/asio/version.hpp _asio_version_line REGEX "#define ASIO_VERSION ")
  string(REGEX MATCH "[0-9]+" _asio_version "${_asio_version_line}")
  if(NOT URING_FOUND)
    message(STATUS "peer asio_uring_echo skipped: liburing-dev not found (pkg-config liburing)")
  elseif(_asio_version LESS 102100)
    message(STATUS "peer asio_uring_echo skipped: Asio ${_asio_version} has no io_uring backend (needs 1.21)")
  else()
    weft_add_asio_peer(asio_uring_echo)
    target_compile_definitions(asio_uring_echo PRIVATE ASIO_HAS_IO_URING=1 ASIO_DISABLE_EPOLL=1)
    target_link_libraries(asio_uring_echo PRIVATE PkgConfig::URING)
  endif()
else()
  message(STATUS "peer asio_echo skipped: libasio-dev not found (asio.hpp)")
  message(STATUS "peer asio_uring_echo skipped: libasio-dev not found (asio.hpp)")
endif()

# --- libuv -------------------------------------------------------------------------------
if(PkgConfig_FOUND)
  pkg_check_modules(UV QUIET IMPORTED_TARGET libuv)
endif()
if(UV_FOUND)
  add_executable(uv_echo ${CMAKE_CURRENT_SOURCE_DIR}/uv_echo.c)
  target_compile_features(uv_echo PRIVATE c_std_11)
  # weft_warnings' -Wall -Wextra -Wpedantic are valid C flags too.
  target_link_libraries(uv_echo PRIVATE PkgConfig::UV Threads::Threads weft_warnings)
  set_target_properties(uv_echo PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${_peers_out})
elseif(NOT PkgConfig_FOUND)
  message(STATUS "peer uv_echo skipped: pkg-config not found (needed to find libuv)")
else()
  message(STATUS "peer uv_echo skipped: libuv1-dev not found (pkg-config libuv)")
endif()
