# Per-source CUDA arch gating (kept free of any CUDA setup so `cmake -P`
# can test it).
# vllm_cuda_archs(<out> [MIN <major.minor>] [ONLY <arch codes>]): the subset of
# the requested archs a source supports (e.g. MIN 8.0 for Marlin, ONLY 90a
# for Hopper-only kernels). An empty result means: do not build that source.
function(vllm_cuda_archs out)
  cmake_parse_arguments(ARG "" "MIN" "ONLY" ${ARGN})
  set(result "")
  foreach(arch IN LISTS VLLM_CUDA_ARCHS)
    string(REGEX MATCH "^[0-9]+[af]?" code "${arch}")
    string(REGEX MATCH "^[0-9]+" number "${arch}")
    if(ARG_MIN)
      string(REPLACE "." "" min_number "${ARG_MIN}")
      if(number LESS min_number)
        continue()
      endif()
    endif()
    if(ARG_ONLY AND NOT code IN_LIST ARG_ONLY)
      continue()
    endif()
    list(APPEND result "${arch}")
  endforeach()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()
