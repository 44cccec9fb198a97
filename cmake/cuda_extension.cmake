# CUDA build: torch-free device code (.cu) compiled per source for the archs
# it supports, torch bindings in .cpp, one _C module.
set(CMAKE_CUDA_COMPILER "${VLLM_NVCC}")
# Any value: each target sets its own CUDA_ARCHITECTURES below.
set(CMAKE_CUDA_ARCHITECTURES OFF)
enable_language(CXX CUDA)
# torch 2.14's headers need C++20.
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
include(torch_extension)
include(cuda_archs)

# torch's CMake config looks for the toolkit itself; an nvcc wrapper script
# on PATH misleads it, so hand it the root CMake found by running nvcc.
set(CUDAToolkit_ROOT "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")
set(CUDA_TOOLKIT_ROOT_DIR "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")
# A toolkit assembled from pip wheels keeps nvrtc and cuSPARSE headers
# beside torch (site-packages/nvidia/cu*), not in the toolkit root.
cmake_path(GET VLLM_TORCH_CMAKE_PREFIX PARENT_PATH _torch_share)
cmake_path(GET _torch_share PARENT_PATH _torch_dir)
cmake_path(GET _torch_dir PARENT_PATH _site_packages)
file(GLOB _pip_cuda_roots "${_site_packages}/nvidia/cu[0-9]*")
foreach(_root IN LISTS _pip_cuda_roots)
  file(GLOB _nvrtc "${_root}/lib/libnvrtc.so*")
  if(_nvrtc AND NOT CUDA_nvrtc_LIBRARY)
    list(GET _nvrtc 0 _first)
    set(CUDA_nvrtc_LIBRARY "${_first}" CACHE FILEPATH "nvrtc from pip")
  endif()
  include_directories(SYSTEM "${_root}/include")
endforeach()

vllm_find_torch()
# torch appends -gencode flags for its own arch list; archs are per target here.
string(REGEX REPLACE "-gencode[ =]+arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")

if(VLLM_CUTLASS_DIR)
  message(STATUS "vllm: CUTLASS headers from ${VLLM_CUTLASS_DIR}")
endif()

# vllm_cuda_objects(<name> ARCHS <archs> SOURCES <.cu files>): device code
# compiled with NVCC_THREADS threads in the vllm_cuda job pool.
set(VLLM_CUDA_OBJECT_LIBS "")
function(vllm_cuda_objects name)
  cmake_parse_arguments(ARG "" "" "ARCHS;SOURCES" ${ARGN})
  if(NOT ARG_ARCHS)
    message(STATUS "vllm: skipping ${name}: none of ${VLLM_CUDA_ARCHS} supports it")
    return()
  endif()
  add_library(${name} OBJECT ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES
    CUDA_ARCHITECTURES "${ARG_ARCHS}" POSITION_INDEPENDENT_CODE ON
    JOB_POOL_COMPILE vllm_cuda CUDA_VISIBILITY_PRESET hidden)
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--threads=${VLLM_NVCC_THREADS} --expt-relaxed-constexpr>)
  set(VLLM_CUDA_OBJECT_LIBS ${VLLM_CUDA_OBJECT_LIBS} ${name} PARENT_SCOPE)
endfunction()

vllm_cuda_archs(_all_archs)
vllm_cuda_objects(vllm_cuda_core_kernels ARCHS ${_all_archs}
  SOURCES csrc/layernorm/layernorm_kernels.cu csrc/activation/activation_kernels.cu
          csrc/pos_encoding/rotary_kernels.cu csrc/cache/cache_kernels.cu
          csrc/attention/paged_attention_kernels.cu csrc/moe/moe_routing_kernels.cu
          csrc/quantization/awq_kernels.cu csrc/attention/mla_kernels.cu)

vllm_add_extension(_C
  SOURCES csrc/core/module_init.cpp csrc/torch_bindings.cpp csrc/cuda/torch_bindings_cuda.cpp
          csrc/cuda/attention_bindings_cuda.cpp csrc/cuda/moe_bindings_cuda.cpp
          csrc/cuda/quant_bindings_cuda.cpp csrc/cuda/mla_bindings_cuda.cpp
          csrc/moe/torch_bindings_moe.cpp
  OBJECTS ${VLLM_CUDA_OBJECT_LIBS})
vllm_write_build_info(MODULES _C CUDA_ARCHS ${VLLM_CUDA_ARCHS})
