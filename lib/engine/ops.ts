/**
 * Low-level engine ops over plain typed arrays (docs/methods.md §4), so anyone can check our numbers
 * independently: token log-probs (chunked, with gradients) and the fused policy loss, each
 * also in its unfused eager form (`eager: true`), and AdamW next to libtorch's own.
 */
import { LOGPROB_CHUNK_SIZE, native, type PolicyLossArgs, type PolicyLossResult, type TokenLogprobsArgs, type TokenLogprobsResult } from "../native";

export const ops = {
  /** log p(target) per token from hidden states and an LM head; gradients when upstream grads are given */
  tokenLogprobs(args: TokenLogprobsArgs): Promise<TokenLogprobsResult> {
    return native().ops.tokenLogprobs({ ...args, chunkSize: args.chunkSize ?? LOGPROB_CHUNK_SIZE });
  },
  /** the fused policy + KL (+ entropy) loss, its statistics and d loss / d logprobs */
  policyLoss(args: PolicyLossArgs): Promise<PolicyLossResult> {
    return native().ops.policyLoss(args);
  },
  adamw(args: Parameters<ReturnType<typeof native>["ops"]["adamw"]>[0]): Promise<Float32Array[]> {
    return native().ops.adamw(args);
  },
};
