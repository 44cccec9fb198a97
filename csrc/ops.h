// Host-side signatures of the ops; each device's bindings implement them.
#pragma once

#include <ATen/core/Tensor.h>

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon);
void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual,
                        const at::Tensor& weight, double epsilon);
