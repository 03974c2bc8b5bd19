/** `octo-native bench <name>`: the performance benches of bench/, each printing its JSON result. */
import { BENCHES } from "../../bench";
import { printJson } from "./print";

export interface BenchCommandArgs {
  /** a bench of BENCHES, or "all" */
  name: string;
  device: string;
  quick: boolean;
  json: boolean;
  /** data-parallel: the strategies to compare (default all) */
  strategy?: ("ddp" | "zero2" | "fsdp")[];
}

/** The `bench` command: the named bench (or all, in order), JSON on stdout and a one-line summary on stderr unless --json. */
export async function benchCommand(args: BenchCommandArgs): Promise<void> {
  const names = args.name === "all" ? Object.keys(BENCHES) : [args.name];
  for (const name of names) {
    const result = await BENCHES[name].run({ device: args.device, quick: args.quick, strategies: args.strategy });
    printJson(result);
    if (!args.json) console.error(`${name}: ratio ${result.ratio.toFixed(3)} — ${result.ratioMeaning}`);
  }
}
