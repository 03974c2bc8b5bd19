/** `octo-native compare`: methods against GRPO on the embedded demo at an equal generation budget (lib/demo/compare-methods.ts). */
import path from "node:path";

import { compareMethodsOnDemo, formatComparison } from "../demo/compare-methods";

export interface CompareCommandArgs {
  model: string;
  out: string;
  steps: number;
  seeds: number;
  methods?: string[];
  "eval-problems": number;
}

export async function compareCommand(args: CompareCommandArgs): Promise<void> {
  const result = await compareMethodsOnDemo({ sftDir: args.model, outDir: args.out, steps: args.steps, seeds: args.seeds, methods: args.methods, evalProblems: args["eval-problems"] });
  console.log(formatComparison(result));
  console.log(`compare: ${path.join(args.out, "compare.json")}, ${path.join(args.out, "compare.html")}`);
}
