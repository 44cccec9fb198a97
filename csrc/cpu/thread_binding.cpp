// init_cpu_threads_env: one OpenMP thread per listed CPU, each bound to its
// own core (VLLM_CPU_OMP_THREADS_BIND). Keeping a thread on one core keeps
// its share of the weights in that core's caches across steps.
#include <ATen/Parallel.h>
#include <omp.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include <torch/library.h>

namespace vllm::cpu_ops {
namespace {

std::vector<int> parse_cpu_ids(const std::string& spec) {
  std::vector<int> ids;
  std::stringstream parts(spec);
  std::string part;
  while (std::getline(parts, part, ',')) {
    const auto dash = part.find('-');
    try {
      if (dash == std::string::npos) {
        ids.push_back(std::stoi(part));
      } else {
        const int lo = std::stoi(part.substr(0, dash)), hi = std::stoi(part.substr(dash + 1));
        TORCH_CHECK(lo <= hi, "init_cpu_threads_env: empty range '", part, "'");
        for (int id = lo; id <= hi; ++id) ids.push_back(id);
      }
    } catch (const std::logic_error&) {
      TORCH_CHECK(false, "init_cpu_threads_env: '", part, "' is not a CPU id or range");
    }
  }
  TORCH_CHECK(!ids.empty(), "init_cpu_threads_env: no CPU ids in '", spec, "'");
  return ids;
}

}  // namespace

std::string init_cpu_threads_env(const std::string& cpu_ids) {
  const std::vector<int> ids = parse_cpu_ids(cpu_ids);
  const int n = static_cast<int>(ids.size());
  at::set_num_threads(n);
  omp_set_num_threads(n);
  std::vector<long> tids(n, -1);
  std::vector<int> errors(n, 0);
#pragma omp parallel for schedule(static, 1) num_threads(n)
  for (int i = 0; i < n; ++i) {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    CPU_SET(ids[i], &mask);
    // pid 0: the calling thread, not the whole process
    errors[i] = sched_setaffinity(0, sizeof(mask), &mask) == 0 ? 0 : errno;
    tids[i] = static_cast<long>(syscall(SYS_gettid));
  }
  std::ostringstream report;
  for (int i = 0; i < n; ++i) {
    TORCH_CHECK(errors[i] == 0, "init_cpu_threads_env: cannot bind a thread to CPU ", ids[i],
                " (errno ", errors[i], ")");
    report << "OMP thread " << i << " (tid " << tids[i] << ") -> CPU " << ids[i] << "\n";
  }
  return report.str();
}

TORCH_LIBRARY_FRAGMENT(_C, m) {
  m.def("init_cpu_threads_env(str cpu_ids) -> str", &init_cpu_threads_env);
}

}  // namespace vllm::cpu_ops
