/** `octo-native merge`: a LoRA adapter merged into its base, written as one Hugging Face checkpoint (docs/methods.md §14). */
import { checkSaveTarget, Model } from "../engine/model";

export interface MergeCommandOptions {
  base: string;
  adapter: string;
  out: string;
  overwrite?: boolean;
  /** where the merge is computed (default cpu, in fp32: W + (alpha / r) · B A, saved in the base's dtype) */
  device?: string;
}

/**
 * Checks everything before loading a byte (the target here; the base, and the adapter against it, in
 * Model.load), then merges and saves.
 */
export async function runMergeCommand(options: MergeCommandOptions): Promise<{ out: string; tensors: number }> {
  checkSaveTarget(options.out, options.overwrite ?? false);
  // fp32 whatever the base's dtype: the merge adds a small update to W and rounds once, on save.
  const model = await Model.load(options.base, { device: options.device ?? "cpu", dtype: "float32", adapter: options.adapter });
  try {
    await model.save(options.out, { merged: true, overwrite: options.overwrite });
    return { out: options.out, tensors: model.handle.parameters().length };
  } finally {
    model.dispose();
  }
}

export interface MergeCommandArgs {
  base: string;
  adapter: string;
  out: string;
  overwrite: boolean;
  device: string;
}

/** The `merge` command: prints where the merged model went. */
export async function mergeCommand(args: MergeCommandArgs): Promise<void> {
  const result = await runMergeCommand(args);
  console.error(`merged ${args.adapter} into ${args.base}: ${result.tensors} tensors in ${result.out}`);
}
