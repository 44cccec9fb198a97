# ROCm build: the CUDA sources are hipified at configure time with torch's
# hipify (cmake/hipify_sources.py) and compiled with CMake's HIP language
# for PYTORCH_ROCM_ARCH. Needs a ROCm torch and a ROCm install that ships
# hip-lang's CMake config (ROCm >= 5.x); not exercised on this project's CI,
# which only compile-checks the hipified device code.
enable_language(CXX)
set(CMAKE_HIP_ARCHITECTURES "${VLLM_HIP_ARCHS}")
enable_language(HIP)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_HIP_STANDARD 17)
include(torch_extension)
vllm_find_torch()

set(_hip_dir "${CMAKE_BINARY_DIR}/hipified")
execute_process(
  COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/hipify_sources.py" "${_hip_dir}"
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _hip_sources ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR " vllm: hipify failed: ${_err}")
endif()
string(STRIP "${_hip_sources}" _hip_sources)
string(REPLACE "\n" ";" _hip_sources "${_hip_sources}")
set_source_files_properties(${_hip_sources} PROPERTIES LANGUAGE HIP)

add_library(vllm_hip_kernels OBJECT ${_hip_sources})
target_compile_definitions(vllm_hip_kernels PRIVATE USE_ROCM)
set_target_properties(vllm_hip_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON
  HIP_VISIBILITY_PRESET hidden)

vllm_add_extension(_C
  SOURCES "${_hip_dir}/csrc/core/module_init.cpp" "${_hip_dir}/csrc/torch_bindings.cpp"
          "${_hip_dir}/csrc/hip/torch_bindings_hip.cpp"
          "${_hip_dir}/csrc/hip/attention_bindings_hip.cpp"
          "${_hip_dir}/csrc/hip/moe_bindings_hip.cpp"
          "${_hip_dir}/csrc/hip/quant_bindings_hip.cpp"
          "${_hip_dir}/csrc/hip/mla_bindings_hip.cpp"
          "${_hip_dir}/csrc/moe/torch_bindings_moe.cpp"
  OBJECTS vllm_hip_kernels)
target_compile_definitions(_C PRIVATE USE_ROCM)
vllm_write_build_info(MODULES _C HIP_ARCHS ${VLLM_HIP_ARCHS})
