# Runs by `cmake -P`: configure, build and install weft to a temporary prefix (and run the
# installed weft-doctor), then build tests/consumer against it three ways and run it:
#   - find_package(weft), liburing looked for at the consumer's configure;
#   - the same with -DWEFT_USE_URING=OFF (every backend but io_uring);
#   - pkg-config (`weft`, and `weft-uring` where liburing has a .pc).
# Each run prints "consumer: ok (io_uring backend: on|off)", compared with what this
# machine should give. (scripts/package_check.sh does the same with the .deb, on a
# machine with liburing-dev and without it.)
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
# Runs `program` and requires its last line to be `expected`.
function(expect_output program expected)
  execute_process(COMMAND ${program} RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  string(STRIP "${out}" out)
  message(STATUS "${program}: ${out}")
  if(NOT rc EQUAL 0 OR NOT out STREQUAL expected)
    message(FATAL_ERROR "${program}: exit ${rc}, printed '${out}', expected '${expected}'")
  endif()
endfunction()

run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/weft -DCMAKE_CXX_COMPILER=${CXX}
    -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCHMARKS=OFF
    -DCMAKE_INSTALL_PREFIX=${prefix})
# (Built first: the package installs weft-doctor, a program, with the headers.)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/weft)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/weft)
run(${prefix}/bin/weft-doctor)

# Does this machine have liburing for a consumer? (pkg-config's answer, as the config's.)
find_program(PKG_CONFIG pkg-config)
set(have_uring OFF)
if(PKG_CONFIG)
  execute_process(COMMAND ${PKG_CONFIG} --exists "liburing >= 2.3" RESULT_VARIABLE rc)
  if(rc EQUAL 0)
    set(have_uring ON)
  endif()
endif()
if(have_uring)
  set(expected "consumer: ok (io_uring backend: on)")
else()
  set(expected "consumer: ok (io_uring backend: off)")
endif()
set(without "consumer: ok (io_uring backend: off)")

run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/consumer
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
expect_output(${WORK_DIR}/consumer/consumer "${expected}")

run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/consumer-no-uring
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix} -DWEFT_USE_URING=OFF)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-no-uring)
expect_output(${WORK_DIR}/consumer-no-uring/consumer "${without}")

if(PKG_CONFIG)
  set(ENV{PKG_CONFIG_PATH} ${prefix}/share/pkgconfig)
  set(modules weft)
  if(have_uring)
    list(APPEND modules weft-uring)
  endif()
  foreach(module IN LISTS modules)
    execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ${module} RESULT_VARIABLE rc OUTPUT_VARIABLE flags)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "pkg-config ${module} failed")
    endif()
    separate_arguments(flags UNIX_COMMAND "${flags}")
    run(${CXX} ${SOURCE_DIR}/tests/consumer/main.cpp -o ${WORK_DIR}/consumer-pc-${module} ${flags})
    if(module STREQUAL "weft")
      expect_output(${WORK_DIR}/consumer-pc-${module} "${without}")
    else()
      expect_output(${WORK_DIR}/consumer-pc-${module} "${expected}")
    endif()
  endforeach()
endif()
