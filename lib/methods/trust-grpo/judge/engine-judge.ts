/**
 * A thinking judge that is a model on our own engine (docs/methods.md §6.3): `Model.load` + greedy
 * `generate`, the score parsed from its text. Any supported Hugging Face checkpoint works; the
 * demo recipes use the demo model itself as a smoke test of the path (it cannot really judge).
 */
import { Model } from "../../../engine/model";
import { TextTokenizer } from "../../../engine/tokenizer";
import type { DeviceOptions } from "../../../native";
import { judgePrompt, scoresFromTexts, type JudgeRequest, type JudgeScore, type ThinkingJudge } from "./thinking-judge";

export interface EngineJudgeOptions {
  /** Hugging Face model directory of the judge */
  modelPath: string;
  device?: DeviceOptions;
  /** with {problem} and {response} */
  promptTemplate: string;
  /** wrap the prompt in the judge tokenizer's chat template */
  chat: boolean;
  maxNewTokens: number;
  /** score of a text without a parseable score */
  fallbackScore: number;
  /** prompts per generate call */
  batch?: number;
}

export class EngineJudge implements ThinkingJudge {
  private constructor(private readonly model: Model, private readonly tokenizer: TextTokenizer, private readonly options: EngineJudgeOptions) {}

  static async load(options: EngineJudgeOptions): Promise<EngineJudge> {
    const model = await Model.load(options.modelPath, options.device ?? {});
    return new EngineJudge(model, TextTokenizer.fromDir(options.modelPath), options);
  }

  async score(requests: JudgeRequest[]): Promise<JudgeScore[]> {
    const texts: string[] = [];
    const batch = this.options.batch ?? 32;
    for (let start = 0; start < requests.length; start += batch) {
      const prompts = requests.slice(start, start + batch).map((r) => {
        const text = judgePrompt(this.options.promptTemplate, r);
        return this.options.chat
          ? this.tokenizer.encodeChat([{ role: "user", content: text }], { addGenerationPrompt: true })
          : this.tokenizer.encode(text, { addSpecialTokens: false });
      });
      const results = await this.model.generate(prompts.map((promptIds) => ({ promptIds })), {
        temperature: 0,
        maxNewTokens: this.options.maxNewTokens,
        eosTokenIds: this.tokenizer.eosTokenIds,
      });
      for (const [sample] of results) texts.push(this.tokenizer.decode(sample.tokens, { skipSpecialTokens: true }));
    }
    return scoresFromTexts(texts, this.options.fallbackScore);
  }

  dispose(): void {
    this.model.dispose();
  }
}
