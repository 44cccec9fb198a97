# CPU build: the ISA-neutral kernel sources are compiled once per variant
# (AVX-512 with BF16/VNNI when the compiler has them, AVX2, scalar) into one
# _C module; csrc/cpu/isa_dispatch.cpp picks the variant for the running CPU.
enable_language(CXX)
# RelWithDebInfo, the default build type, with line tables only (-g1): the
# installed module is stripped (scikit-build-core's install.strip), so full
# debug info bought nothing a user keeps and was 27% of the compiler's time
# (162 -> 118 s of CPU, 89 -> 67 s on 2 cores); -g1 still gives perf and
# backtraces function names and lines from the build tree's copy.
# CMAKE_BUILD_TYPE=Debug keeps full -g; flags a user set are left alone.
if(CMAKE_CXX_FLAGS_RELWITHDEBINFO STREQUAL "-O2 -g -DNDEBUG")
  set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O2 -g1 -DNDEBUG")
endif()
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
include(CheckCXXCompilerFlag)
include(torch_extension)
vllm_find_torch()
find_package(OpenMP REQUIRED COMPONENTS CXX)

set(VLLM_CPU_KERNEL_SOURCES
  csrc/cpu/kernel_table.cpp
  csrc/cpu/layernorm.cpp
  csrc/cpu/linear.cpp
  csrc/cpu/activation.cpp
  csrc/cpu/rotary.cpp
  csrc/cpu/attention.cpp
  csrc/cpu/argmax.cpp
  csrc/cpu/packed_linear.cpp
  csrc/cpu/packed_moe.cpp
  csrc/cpu/quant_linear.cpp
  csrc/cpu/mla_attention.cpp)

set(_avx512_flags -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c)
check_cxx_compiler_flag("-mavx512bf16 -mavx512vnni" VLLM_CXX_HAS_AVX512_BF16)
set(_dispatch_defs "")
if(VLLM_CXX_HAS_AVX512_BF16)
  list(APPEND _avx512_flags -mavx512bf16 -mavx512vnni)
  list(APPEND _dispatch_defs VLLM_AVX512_BF16)
endif()

set(VLLM_CPU_ISAS avx512 avx2 scalar)
set(_flags_avx512 ${_avx512_flags})
set(_flags_avx2 -mavx2 -mfma -mf16c)
set(_flags_scalar "")

set(_objects "")
foreach(isa IN LISTS VLLM_CPU_ISAS)
  string(TOUPPER "${isa}" ISA)
  add_library(vllm_cpu_${isa} OBJECT ${VLLM_CPU_KERNEL_SOURCES})
  target_compile_definitions(vllm_cpu_${isa} PRIVATE VLLM_ISA_${ISA})
  target_compile_options(vllm_cpu_${isa} PRIVATE ${_flags_${isa}})
  target_link_libraries(vllm_cpu_${isa} PRIVATE OpenMP::OpenMP_CXX)
  set_target_properties(vllm_cpu_${isa} PROPERTIES
    POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden)
  list(APPEND _objects vllm_cpu_${isa})
  list(APPEND _dispatch_defs VLLM_BUILT_${ISA})
endforeach()

vllm_add_extension(_C
  SOURCES csrc/core/module_init.cpp csrc/torch_bindings.cpp
          csrc/cpu/torch_bindings_cpu.cpp csrc/cpu/cache_ops.cpp
          csrc/cpu/attention_bindings_cpu.cpp csrc/cpu/isa_dispatch.cpp
          csrc/cpu/thread_binding.cpp csrc/cpu/linear_bindings_cpu.cpp
          csrc/cpu/decode_layers.cpp csrc/cpu/decode_one_row.cpp
          csrc/cpu/moe_bindings_cpu.cpp
          csrc/cpu/quant_bindings_cpu.cpp csrc/cpu/mla_bindings_cpu.cpp
          csrc/moe/torch_bindings_moe.cpp csrc/cpu/moe_routing_cpu.cpp
  OBJECTS ${_objects})
target_compile_definitions(_C PRIVATE VLLM_HAS_CPU_KERNELS ${_dispatch_defs})
target_link_libraries(_C PRIVATE OpenMP::OpenMP_CXX)

set(_isas_recorded ${VLLM_CPU_ISAS})
if(VLLM_CXX_HAS_AVX512_BF16)
  list(TRANSFORM _isas_recorded REPLACE "^avx512$" "avx512+bf16+vnni")
endif()
vllm_write_build_info(MODULES _C CPU_ISAS ${_isas_recorded})
