/**
 * Low-level engine ops over plain typed arrays (docs/methods.md §4), so anyone can check our numbers
 * independently: token log-probs (chunked, with gradients) and the fused policy loss, each
 * also in its unfused eager form (`eager: true`), and AdamW next to libtorch's own.
 */
import { LOGPROB_CHUNK_SIZE, native, type PolicyLossArgs, type PolicyLossResult, type TokenLogprobsArgs, type TokenLogprobsResult } from "../native";
import { Model } from "./model";

export const ops = {
  /**
   * log p(target) per token from hidden states and an LM head (a Float32Array, or a Model's own);
   * gradients when upstream grads are given, into gradHiddenOut / gradWeightOut when those are given
   */
  async tokenLogprobs(args: Omit<TokenLogprobsArgs, "weight"> & { weight: TokenLogprobsArgs["weight"] | Model }): Promise<TokenLogprobsResult> {
    const chunkSize = args.chunkSize ?? LOGPROB_CHUNK_SIZE;
    if (!Number.isInteger(chunkSize) || chunkSize < 0) throw new RangeError(`chunkSize must be a whole number >= 0 (0: from the memory budget); got ${chunkSize}`);
    if (args.memoryBudgetBytes !== undefined && !(Number.isInteger(args.memoryBudgetBytes) && args.memoryBudgetBytes >= 0))
      throw new RangeError(`memoryBudgetBytes must be a whole number >= 0 (0: the default budget); got ${args.memoryBudgetBytes}`);
    const weight = args.weight instanceof Model ? args.weight.handle : args.weight;
    return native().ops.tokenLogprobs({ ...args, weight, chunkSize });
  },
  /** the fused policy + KL (+ entropy) loss, its statistics and d loss / d logprobs */
  policyLoss(args: PolicyLossArgs): Promise<PolicyLossResult> {
    return native().ops.policyLoss(args);
  },
  adamw(args: Parameters<ReturnType<typeof native>["ops"]["adamw"]>[0]): Promise<Float32Array[]> {
    return native().ops.adamw(args);
  },
};
