/**
 * A thinking judge behind an OpenAI-compatible endpoint (docs/methods.md §6.3): POST
 * `{baseUrl}/chat/completions` with Node's built-in fetch, a timeout per attempt
 * (AbortController), bounded retries with exponential backoff on network errors, timeouts,
 * 429, 5xx and malformed bodies, and errors that name the URL. Other 4xx (a wrong model name,
 * a bad key) are not retried: they will not heal.
 */
import { judgePrompt, scoresFromTexts, type JudgeRequest, type JudgeScore, type ThinkingJudge } from "./thinking-judge";

export interface HttpJudgeOptions {
  /** e.g. http://localhost:8000/v1 (the request goes to {baseUrl}/chat/completions) */
  baseUrl: string;
  /** the `model` field of the request */
  model: string;
  /** the API key, if the endpoint wants one (read from an environment variable by the caller) */
  apiKey?: string;
  promptTemplate: string;
  maxTokens: number;
  /** per attempt */
  timeoutMs: number;
  /** attempts after the first */
  retries: number;
  /** first backoff; doubles per retry */
  backoffMs: number;
  /** requests in flight at once */
  concurrency: number;
  fallbackScore: number;
}

export class JudgeEndpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JudgeEndpointError";
  }
}

/** One failed attempt; `retry` says whether another may succeed. */
class AttemptError extends Error {
  constructor(message: string, readonly retry: boolean) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class HttpJudge implements ThinkingJudge {
  readonly url: string;
  /** attempts that failed and were retried (for metrics) */
  retriedAttempts = 0;

  constructor(private readonly options: HttpJudgeOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl.replace(/\/+$/, "") + "/chat/completions");
    } catch {
      throw new JudgeEndpointError(`judge endpoint '${options.baseUrl}' is not a valid URL (expected e.g. http://localhost:8000/v1)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new JudgeEndpointError(`judge endpoint '${options.baseUrl}' must be http:// or https://`);
    this.url = url.toString();
  }

  async score(requests: JudgeRequest[]): Promise<JudgeScore[]> {
    const texts = new Array<string>(requests.length);
    let next = 0;
    const worker = async () => {
      while (next < requests.length) {
        const i = next++;
        texts[i] = await this.complete(judgePrompt(this.options.promptTemplate, requests[i]));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, requests.length) }, worker));
    return scoresFromTexts(texts, this.options.fallbackScore);
  }

  /** The judge's text for one prompt, after at most 1 + retries attempts. */
  async complete(prompt: string): Promise<string> {
    const failures: string[] = [];
    for (let attempt = 0; attempt <= this.options.retries; attempt++) {
      if (attempt > 0) {
        this.retriedAttempts++;
        await sleep(this.options.backoffMs * 2 ** (attempt - 1));
      }
      try {
        return await this.attempt(prompt);
      } catch (error) {
        if (!(error instanceof AttemptError)) throw error;
        failures.push(error.message);
        if (!error.retry) break;
      }
    }
    throw new JudgeEndpointError(`judge endpoint ${this.url} failed after ${failures.length} attempt(s): ${failures.join("; ")}`);
  }

  private async attempt(prompt: string): Promise<string> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.options.timeoutMs);
    let response: Response;
    let body: string;
    try {
      response = await fetch(this.url, {
        method: "POST",
        headers: { "content-type": "application/json", ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}) },
        body: JSON.stringify({ model: this.options.model, messages: [{ role: "user", content: prompt }], temperature: 0, max_tokens: this.options.maxTokens }),
        signal: controller.signal,
      });
      body = await response.text();
    } catch (error) {
      if (controller.signal.aborted) throw new AttemptError(`no answer within ${this.options.timeoutMs} ms`, true);
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new AttemptError(`request failed (${cause?.code ?? cause?.message ?? (error as Error).message})`, true);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      const retry = response.status === 429 || response.status >= 500;
      throw new AttemptError(`HTTP ${response.status}${body ? `: ${body.slice(0, 200)}` : ""}`, retry);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new AttemptError(`the body is not JSON: ${JSON.stringify(body.slice(0, 120))}`, true);
    }
    const content = (parsed as { choices?: { message?: { content?: unknown } }[] })?.choices?.[0]?.message?.content;
    if (typeof content !== "string") throw new AttemptError(`the body has no choices[0].message.content string: ${body.slice(0, 120)}`, true);
    return content;
  }

  dispose(): void {}
}
