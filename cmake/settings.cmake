# Resolve the installation-time settings with cmake/build_env.py and apply
# the ones CMake itself acts on (build type, job pools, verbosity).
if(NOT Python_EXECUTABLE)
  find_package(Python REQUIRED COMPONENTS Interpreter)
endif()

set(_settings_file "${CMAKE_BINARY_DIR}/vllm_settings.cmake")
execute_process(
  COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/build_env.py"
          cmake "${_settings_file}"
  RESULT_VARIABLE _settings_rc
  ERROR_VARIABLE _settings_err)
if(NOT _settings_rc EQUAL 0)
  string(STRIP "${_settings_err}" _settings_err)
  # A leading space keeps CMake from re-wrapping the one-line message.
  message(FATAL_ERROR " ${_settings_err}")
endif()
include("${_settings_file}")

# A build directory serves one device and one torch: reusing it for another
# would mix compilers, flags and torch headers in one cache.
set(_configured_for "${VLLM_TARGET_DEVICE} with torch ${VLLM_TORCH_VERSION}")
if(NOT VLLM_PRECOMPILED_WHEEL AND DEFINED CACHE{VLLM_CONFIGURED_FOR}
   AND NOT VLLM_CONFIGURED_FOR STREQUAL _configured_for)
  message(FATAL_ERROR " vllm build configuration error: ${CMAKE_BINARY_DIR} was "
    "configured for ${VLLM_CONFIGURED_FOR}, not ${_configured_for}; remove that "
    "directory or set VLLM_TARGET_DEVICE explicitly (each device gets its own)")
endif()
if(NOT VLLM_PRECOMPILED_WHEEL)
  set(VLLM_CONFIGURED_FOR "${_configured_for}" CACHE INTERNAL "")
endif()

if(VLLM_DEVICE_DETECTED)
  message(STATUS "VLLM_TARGET_DEVICE unset: building for ${VLLM_TARGET_DEVICE} "
                 "(${VLLM_DEVICE_REASON})")
else()
  message(STATUS "VLLM_TARGET_DEVICE=${VLLM_TARGET_DEVICE} (${VLLM_DEVICE_REASON})")
endif()

# CMAKE_BUILD_TYPE comes from the environment variable of that name, checked
# by build_env.py; it overrides the default scikit-build-core passes.
set(CMAKE_BUILD_TYPE "${VLLM_BUILD_TYPE}" CACHE STRING "Build type" FORCE)
set(CMAKE_VERBOSE_MAKEFILE ${VLLM_VERBOSE})

# MAX_JOBS and NVCC_THREADS become Ninja job pools, so the cap holds however
# the build tool is invoked: C++ compiles use MAX_JOBS slots, CUDA compiles
# MAX_JOBS // NVCC_THREADS (each nvcc runs NVCC_THREADS threads).
set_property(GLOBAL APPEND PROPERTY JOB_POOLS
  vllm_compile=${VLLM_MAX_JOBS} vllm_cuda=${VLLM_CUDA_JOBS} vllm_link=${VLLM_MAX_JOBS})
set(CMAKE_JOB_POOL_COMPILE vllm_compile)
set(CMAKE_JOB_POOL_LINK vllm_link)
message(STATUS "vllm: ${VLLM_MAX_JOBS} compile jobs, ${VLLM_CUDA_JOBS} CUDA jobs x "
               "${VLLM_NVCC_THREADS} nvcc threads, build type ${CMAKE_BUILD_TYPE}")
