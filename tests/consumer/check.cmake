# Runs by `cmake -P`: configure, build and install weft to a temporary prefix (and run the
# installed weft-doctor), then configure,
# build and run tests/consumer against it with find_package(weft).
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/weft -DCMAKE_CXX_COMPILER=${CXX}
    -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCHMARKS=OFF
    -DCMAKE_INSTALL_PREFIX=${prefix})
# (Built first: the package installs weft-doctor, a program, with the headers.)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/weft)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/weft)
run(${prefix}/bin/weft-doctor)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/consumer
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/consumer)
