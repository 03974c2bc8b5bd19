/**
 * Trust-GRPO rollouts (docs/methods.md §6.3): outcome rewards (0 when the format check fails), one judge
 * call for the responses that need a thinking reward, then γ, the annealed weight and
 * R = R_out + γ·α·exp(−t/T)·R_think per group (lib/methods/trust-grpo/trust-grpo.ts).
 */
import type { RunConfig } from "../../rl/config";
import { ConfigError } from "../../rl/config";
import { promptText } from "../../rl/prompts";
import { mean } from "../../util/stats";
import { overlongShaping } from "../grpo/hook";
import { answerMatches, plainSample, type GroupBuild, type HookContext, type MethodHook, type PromptRollouts } from "../hook";
import { EngineJudge } from "./judge/engine-judge";
import { HttpJudge } from "./judge/http-judge";
import type { JudgeRequest, ThinkingJudge } from "./judge/thinking-judge";
import { annealedThinkingWeight, answerFormatOk, outcomeReward, responsesToJudge, saturatedGroup, trustRewards, type TrustOptions } from "./trust-grpo";

/** The judge of a run's config. `startingModel` is what judge.modelPath "policy" means. */
export async function createJudge(config: RunConfig, startingModel: string): Promise<ThinkingJudge> {
  const judge = config.method.trustGrpo.judge;
  if (judge.backend === "http") {
    if (!judge.url) throw new ConfigError("method.trustGrpo.judge.url: the http judge needs the endpoint's base URL, e.g. http://localhost:8000/v1");
    const apiKey = judge.apiKeyEnv ? process.env[judge.apiKeyEnv] : undefined;
    if (judge.apiKeyEnv && !apiKey) throw new ConfigError(`method.trustGrpo.judge.apiKeyEnv: the environment variable ${judge.apiKeyEnv} is not set`);
    return new HttpJudge({
      baseUrl: judge.url, model: judge.model, apiKey, promptTemplate: judge.promptTemplate, maxTokens: judge.maxNewTokens,
      timeoutMs: judge.timeoutMs, retries: judge.retries, backoffMs: judge.backoffMs, concurrency: judge.concurrency, fallbackScore: judge.fallbackScore,
    });
  }
  if (!judge.modelPath) throw new ConfigError("method.trustGrpo.judge.modelPath: the engine judge needs a Hugging Face model directory (or \"policy\")");
  return EngineJudge.load({
    modelPath: judge.modelPath === "policy" ? startingModel : judge.modelPath,
    device: { device: config.model.device, dtype: config.model.dtype },
    promptTemplate: judge.promptTemplate, chat: judge.chat, maxNewTokens: judge.maxNewTokens, fallbackScore: judge.fallbackScore,
  });
}

export function trustOptions(config: RunConfig): TrustOptions {
  const t = config.method.trustGrpo;
  return { ...t, annealSteps: t.annealSteps > 0 ? t.annealSteps : config.run.steps };
}

export function trustGrpoHook(context: HookContext, judge: ThinkingJudge): MethodHook {
  const { config } = context;
  const options = trustOptions(config);
  let stats = { gammas: [] as number[], thinking: [] as number[], judged: 0, unparseable: 0, saturatedGroups: 0, lowOutcomeSkips: 0, formatFailures: 0, weight: 0 };

  return {
    groupSize: config.rollout.samplesPerPrompt,
    klCoef: config.loss.klCoef,
    rollout: {},
    async buildGroups(groups: PromptRollouts[], step: number): Promise<GroupBuild[]> {
      const outcomes = groups.map((g) =>
        g.texts.map((text) => {
          const formatOk = answerFormatOk(text);
          if (!formatOk) stats.formatFailures++;
          return outcomeReward(answerMatches(g.example.answer, text), formatOk);
        }),
      );
      const toJudge = outcomes.map((o) => responsesToJudge(o, options));
      const requests: JudgeRequest[] = [];
      groups.forEach((g, p) => {
        if (saturatedGroup(outcomes[p], options)) stats.saturatedGroups++;
        else stats.lowOutcomeSkips += toJudge[p].filter((j) => !j).length;
        toJudge[p].forEach((j, i) => j && requests.push({ problem: promptText(g.example, config.data.promptTemplate), response: g.texts[i] }));
      });
      const scores = requests.length > 0 ? await judge.score(requests) : [];
      stats.judged += scores.length;
      stats.unparseable += scores.filter((s) => !s.parsed).length;
      stats.weight = annealedThinkingWeight(step - 1, options);
      let next = 0;
      return groups.map((g, p) => {
        const judged = toJudge[p].map((j) => (j ? scores[next++].score : undefined));
        const result = trustRewards(outcomes[p], judged, step - 1, options);
        stats.gammas.push(result.gamma.gamma);
        judged.forEach((t) => t !== undefined && stats.thinking.push(t));
        const rollouts = g.texts.map((_, i) => {
          const correct = outcomes[p][i] >= options.correctAbove;
          return { firstCorrect: correct, finalCorrect: correct, hasMarker: false, reward: result.rewards[i] + overlongShaping(config, g.samples[i].tokens.length) };
        });
        return { samples: g.samples.map((s, i) => plainSample(s.tokens, rollouts[i].reward)), rollouts, train: true };
      });
    },
    async finishStep() {
      const metrics = {
        gamma: mean(stats.gammas),
        groupsWithGammaBelowOne: stats.gammas.filter((g) => g < 1).length,
        thinkingReward: stats.thinking.length > 0 ? mean(stats.thinking) : null,
        thinkingWeight: stats.weight,
        judgedResponses: stats.judged,
        unparseableJudgements: stats.unparseable,
        skippedSaturatedGroups: stats.saturatedGroups,
        skippedLowOutcome: stats.lowOutcomeSkips,
        formatFailures: stats.formatFailures,
      };
      stats = { gammas: [], thinking: [], judged: 0, unparseable: 0, saturatedGroups: 0, lowOutcomeSkips: 0, formatFailures: 0, weight: 0 };
      return { metrics };
    },
    dispose: () => judge.dispose(),
  };
}
