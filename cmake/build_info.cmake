# vllm/_build_info.json records how this package was built; vllm reads it to
# report the build (python -m vllm.collect_env) and to refuse a mismatched
# torch at import instead of failing on an undefined symbol.
function(_vllm_json_list out)
  set(items "")
  foreach(item IN LISTS ARGN)
    list(APPEND items "\"${item}\"")
  endforeach()
  list(JOIN items ", " joined)
  set(${out} "[${joined}]" PARENT_SCOPE)
endfunction()

# vllm_write_build_info(MODULES <names> [CPU_ISAS <isas>] [CUDA_ARCHS <archs>]
#                       [HIP_ARCHS <archs>])
function(vllm_write_build_info)
  cmake_parse_arguments(ARG "" "" "MODULES;CPU_ISAS;CUDA_ARCHS;HIP_ARCHS" ${ARGN})
  _vllm_json_list(modules ${ARG_MODULES})
  _vllm_json_list(cpu_isas ${ARG_CPU_ISAS})
  _vllm_json_list(cuda_archs ${ARG_CUDA_ARCHS})
  _vllm_json_list(hip_archs ${ARG_HIP_ARCHS})
  set(compiler "")
  if(CMAKE_CXX_COMPILER_ID)
    set(compiler "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
  endif()
  set(out "${CMAKE_BINARY_DIR}/_build_info.json")
  file(WRITE "${out}" "{
  \"version\": \"${VLLM_VERSION}\",
  \"target_device\": \"${VLLM_TARGET_DEVICE}\",
  \"torch_version\": \"${VLLM_TORCH_VERSION}\",
  \"torch_cuda_version\": \"${VLLM_TORCH_CUDA_VERSION}\",
  \"python_tag\": \"${VLLM_PYTHON_TAG}\",
  \"build_type\": \"${CMAKE_BUILD_TYPE}\",
  \"compiled_modules\": ${modules},
  \"cpu_isa_variants\": ${cpu_isas},
  \"cuda_archs\": ${cuda_archs},
  \"hip_archs\": ${hip_archs},
  \"compiler\": \"${compiler}\",
  \"precompiled_from\": null
}
")
  install(FILES "${out}" DESTINATION vllm)
endfunction()
