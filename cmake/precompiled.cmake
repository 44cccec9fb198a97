# VLLM_USE_PRECOMPILED: reuse the compiled modules of a wheel this project
# built. build_env.py has already checked that its torch, Python ABI and
# device match this environment. No language is enabled: no compiler needed.
set(_extract_dir "${CMAKE_BINARY_DIR}/precompiled")
file(REMOVE_RECURSE "${_extract_dir}")
file(ARCHIVE_EXTRACT INPUT "${VLLM_PRECOMPILED_WHEEL}" DESTINATION "${_extract_dir}"
     PATTERNS "vllm/*.so" "vllm/_build_info.json")
file(GLOB _modules "${_extract_dir}/vllm/*.so")
message(STATUS "vllm: reusing ${_modules} from ${VLLM_PRECOMPILED_WHEEL}")
install(FILES ${_modules} DESTINATION vllm)

get_filename_component(_wheel_name "${VLLM_PRECOMPILED_WHEEL}" NAME)
file(READ "${_extract_dir}/vllm/_build_info.json" _info)
string(JSON _info SET "${_info}" precompiled_from "\"${_wheel_name}\"")
string(JSON _info SET "${_info}" version "\"${VLLM_VERSION}\"")
file(WRITE "${CMAKE_BINARY_DIR}/_build_info.json" "${_info}\n")
install(FILES "${CMAKE_BINARY_DIR}/_build_info.json" DESTINATION vllm)
