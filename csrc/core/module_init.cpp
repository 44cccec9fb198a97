// The Python module object of the _C extension. Ops register themselves with
// torch when the library loads; the module only adds the CPU ISA controls
// (functions that exist in CPU builds).
#include <Python.h>

#if defined(VLLM_HAS_CPU_KERNELS)
#include "../cpu/kernel_table.h"

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(vllm::cpu::active_kernels().isa);
}
PyObject* supported_cpu_isas(PyObject*, PyObject*) {
  return PyUnicode_FromString(vllm::cpu::supported_isas());
}
PyObject* built_cpu_isas(PyObject*, PyObject*) {
  return PyUnicode_FromString(vllm::cpu::built_isas());
}
PyObject* packed_linear_available(PyObject*, PyObject*) {
  return PyBool_FromLong(vllm::cpu::active_kernels().packed_linear != nullptr);
}
PyObject* quant_linear_available(PyObject*, PyObject*) {
  return PyBool_FromLong(vllm::cpu::active_kernels().quant_linear != nullptr);
}
PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (!name) return nullptr;
  if (!vllm::cpu::set_active_isa(name)) {
    PyErr_Format(PyExc_ValueError,
                 "CPU kernel variant '%s' is not available here; built: %s; "
                 "this CPU supports: %s",
                 name, vllm::cpu::built_isas(), vllm::cpu::supported_isas());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The CPU kernel variant in use."},
    {"supported_cpu_isas", supported_cpu_isas, METH_NOARGS,
     "Comma-separated variants this CPU can run, best first."},
    {"built_cpu_isas", built_cpu_isas, METH_NOARGS, "Comma-separated variants compiled in."},
    {"packed_linear_available", packed_linear_available, METH_NOARGS,
     "Whether the active variant has packed_linear (AVX512-BF16)."},
    {"quant_linear_available", quant_linear_available, METH_NOARGS,
     "Whether the active variant has quant_linear (4/8-bit weights)."},
    {"set_cpu_isa", set_cpu_isa, METH_O, "Switch the CPU kernel variant ('auto' = best)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace
#define VLLM_MODULE_METHODS kMethods
#else
#define VLLM_MODULE_METHODS nullptr
#endif

PyMODINIT_FUNC PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "vLLM compiled ops (torch.ops._C)",
                               -1, VLLM_MODULE_METHODS};
  return PyModule_Create(&module);
}
