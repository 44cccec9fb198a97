# Shared by the device builds: find Python and the build's torch, and define a
# torch extension module installed into vllm/.
find_package(Python REQUIRED COMPONENTS Interpreter Development.Module)

# Only the torch that build_env.py probed: scikit-build-core puts the outer
# site-packages on CMAKE_PREFIX_PATH, and mixing two torches' configs breaks.
macro(vllm_find_torch)
  find_package(Torch REQUIRED PATHS "${VLLM_TORCH_CMAKE_PREFIX}" NO_DEFAULT_PATH)
endmacro()

# vllm_add_extension(<name> SOURCES <files...> [OBJECTS <object libs...>])
function(vllm_add_extension name)
  cmake_parse_arguments(ARG "" "" "SOURCES;OBJECTS" ${ARGN})
  set(objects "")
  foreach(lib IN LISTS ARG_OBJECTS)
    list(APPEND objects "$<TARGET_OBJECTS:${lib}>")
  endforeach()
  Python_add_library(${name} MODULE WITH_SOABI ${ARG_SOURCES} ${objects})
  target_include_directories(${name} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
  target_link_libraries(${name} PRIVATE torch)
  # Hidden symbols: nothing of ours leaks into, or is taken from, other
  # libraries in the process; PyInit_* is exported by PyMODINIT_FUNC.
  # No RPATH: libtorch and its libgomp are already loaded by `import torch`
  # (vllm imports it first), and a build-tree RPATH would only point at them.
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    SKIP_BUILD_RPATH ON)
  install(TARGETS ${name} LIBRARY DESTINATION vllm)
endfunction()
