// The schema registry of the MoE routing ops, in their own namespace as vLLM
// names them (torch.ops._moe_C.*). They live in the _C module: importing
// vllm._C registers both namespaces. Devices register implementations in
// their own binding files.
#include <torch/library.h>

TORCH_LIBRARY(_moe_C, ops) {
  // Softmax over the experts of each token (fp32), then its top k:
  // topk_weights [M, k] fp32 and topk_ids [M, k] int32/int64 in descending
  // weight order (ties: the lower expert id first), token_expert_indices
  // [M, k] int32 = j * M + token (the row of the j-th choice when the M x k
  // choices are laid out choice-major). gating_output [M, E].
  ops.def(
      "topk_softmax(Tensor! topk_weights, Tensor! topk_ids, Tensor! token_expert_indices, "
      "Tensor gating_output) -> ()");
  // Groups the M x k (token, choice) pairs by expert, each expert's run padded
  // to a multiple of block_size: sorted_token_ids holds flat indices into
  // topk_ids (padding: topk_ids.numel()), experts_ids the expert of each
  // block (-1 past the last), num_tokens_post_pad[0] the padded length.
  ops.def(
      "moe_align_block_size(Tensor topk_ids, int num_experts, int block_size, "
      "Tensor! sorted_token_ids, Tensor! experts_ids, Tensor! num_tokens_post_pad) -> ()");
  // output [M, H] = input [M, k, H] summed over k (fp32 accumulation).
  ops.def("moe_sum(Tensor input, Tensor! output) -> ()");
}
