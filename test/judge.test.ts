// Thinking-reward judges (docs/methods.md §6.3): the score parser, the OpenAI-compatible HTTP judge
// against a stub server on loopback (success, timeouts, 5xx then success, malformed bodies,
// 4xx without retry, a dead port), and the engine judge on the demo model.
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import { ensureDemoModel } from "../lib/demo/model";
import { EngineJudge } from "../lib/methods/trust-grpo/judge/engine-judge";
import { HttpJudge, JudgeEndpointError, type HttpJudgeOptions } from "../lib/methods/trust-grpo/judge/http-judge";
import { judgePrompt, parseJudgeScore, scoresFromTexts, THINKING_JUDGE_PROMPT } from "../lib/methods/trust-grpo/judge/thinking-judge";

describe("parseJudgeScore", () => {
  test("reads `Score: s` and its variants, the last one wins", () => {
    expect(parseJudgeScore("The reasoning is sound.\nScore: 0.8")).toBe(0.8);
    expect(parseJudgeScore("score=0.25")).toBe(0.25);
    expect(parseJudgeScore("**Score:** 0.6")).toBe(0.6);
    expect(parseJudgeScore("<score>0.4</score>")).toBe(0.4);
    expect(parseJudgeScore("final: \\boxed{0.9}")).toBe(0.9);
    expect(parseJudgeScore("Score: 0.2 ... on reflection, Score: 0.7")).toBe(0.7);
  });
  test("fractions and percentages; a reply that is only a number", () => {
    expect(parseJudgeScore("Score: 7/10")).toBeCloseTo(0.7, 12);
    expect(parseJudgeScore("Score: 80%")).toBeCloseTo(0.8, 12);
    expect(parseJudgeScore(" 0.35 ")).toBe(0.35);
    expect(parseJudgeScore("3/4")).toBe(0.75);
  });
  test("clipped to [0, 1]", () => {
    expect(parseJudgeScore("Score: 8")).toBe(1);
    expect(parseJudgeScore("Score: -2")).toBe(0);
    expect(parseJudgeScore("Score: 1/0")).toBeUndefined();
  });
  test("no score: undefined (bare numbers inside free text are not read)", () => {
    expect(parseJudgeScore("7+5=12, then 12-3=9")).toBeUndefined();
    expect(parseJudgeScore("")).toBeUndefined();
    expect(parseJudgeScore("Score: none")).toBeUndefined();
  });
  test("unparseable texts take the fallback and are flagged", () => {
    expect(scoresFromTexts(["Score: 0.5", "??"], 0.1)).toEqual([
      { score: 0.5, parsed: true, text: "Score: 0.5" },
      { score: 0.1, parsed: false, text: "??" },
    ]);
  });
  test("the prompt template substitutes problem and response", () => {
    expect(judgePrompt("P={problem} R={response}", { problem: "1+1", response: "2" })).toBe("P=1+1 R=2");
    expect(THINKING_JUDGE_PROMPT).toMatch(/\{problem\}[\s\S]*\{response\}/);
  });
});

describe("HttpJudge against a loopback stub", () => {
  type Handler = (body: { model: string; messages: { content: string }[] }, res: http.ServerResponse, call: number) => void;
  let handler: Handler;
  let calls = 0;
  let server: http.Server;
  let baseUrl = "";
  const received: unknown[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let data = "";
      req.on("data", (c) => (data += c));
      req.on("end", () => {
        const body = JSON.parse(data);
        received.push({ url: req.url, auth: req.headers.authorization, body });
        handler(body, res, calls++);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    calls = 0;
    received.length = 0;
  });

  const options = (extra: Partial<HttpJudgeOptions> = {}): HttpJudgeOptions => ({
    baseUrl, model: "stub-judge", promptTemplate: "{problem} | {response}", maxTokens: 32,
    timeoutMs: 2000, retries: 2, backoffMs: 5, concurrency: 3, fallbackScore: 0, ...extra,
  });
  const reply = (res: http.ServerResponse, content: string) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ choices: [{ message: { role: "assistant", content } }] }));
  };

  test("posts chat completions to {baseUrl}/chat/completions and parses each score, in order", async () => {
    handler = (body, res) => reply(res, `Score: ${body.messages[0].content.length % 2 === 0 ? "0.75" : "oops"}`);
    const judge = new HttpJudge(options({ apiKey: "sk-test" }));
    const requests = [{ problem: "1+1", response: "2" }, { problem: "2+2", response: "4!" }, { problem: "3+3", response: "6" }];
    const scores = await judge.score(requests);
    expect(scores.map((s) => [s.score, s.parsed])).toEqual(requests.map((r) => (`${r.problem} | ${r.response}`.length % 2 === 0 ? [0.75, true] : [0, false])));
    expect(received).toHaveLength(3);
    expect(received[0]).toMatchObject({ url: "/v1/chat/completions", auth: "Bearer sk-test", body: { model: "stub-judge", max_tokens: 32, temperature: 0 } });
  });

  test("5xx then success: retried with backoff", async () => {
    handler = (_, res, call) => {
      if (call < 2) {
        res.writeHead(503);
        res.end("overloaded");
      } else reply(res, "Score: 0.5");
    };
    const judge = new HttpJudge(options());
    expect((await judge.score([{ problem: "p", response: "r" }]))[0]).toMatchObject({ score: 0.5, parsed: true });
    expect(calls).toBe(3);
    expect(judge.retriedAttempts).toBe(2);
  });

  test("a server that never answers in time: each attempt times out, then a clear error naming the URL", async () => {
    handler = () => {}; // never responds
    const judge = new HttpJudge(options({ timeoutMs: 100, retries: 1 }));
    const error = await judge.score([{ problem: "p", response: "r" }]).catch((e) => e);
    expect(error).toBeInstanceOf(JudgeEndpointError);
    expect(error.message).toContain(`${baseUrl}/chat/completions`);
    expect(error.message).toMatch(/2 attempt\(s\): no answer within 100 ms; no answer within 100 ms/);
  });

  test("malformed bodies are retried, and reported when they persist", async () => {
    handler = (_, res, call) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(call === 0 ? "{not json" : call === 1 ? JSON.stringify({ choices: [] }) : JSON.stringify({ choices: [{ message: { content: "Score: 1" } }] }));
    };
    expect((await new HttpJudge(options()).score([{ problem: "p", response: "r" }]))[0].score).toBe(1);
    handler = (_, res) => {
      res.writeHead(200);
      res.end("<html>proxy error</html>");
    };
    await expect(new HttpJudge(options({ retries: 1 })).score([{ problem: "p", response: "r" }])).rejects.toThrow(/chat\/completions failed after 2 attempt\(s\): the body is not JSON/);
  });

  test("4xx other than 429 is not retried", async () => {
    handler = (_, res) => {
      res.writeHead(404);
      res.end('{"error":"model stub-judge not found"}');
    };
    await expect(new HttpJudge(options()).score([{ problem: "p", response: "r" }])).rejects.toThrow(/1 attempt\(s\): HTTP 404: .*not found/);
    expect(calls).toBe(1);
  });

  test("a port nobody listens on: a connection error naming the URL; a bad URL fails at construction", async () => {
    const dead = http.createServer();
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const judge = new HttpJudge(options({ baseUrl: `http://127.0.0.1:${port}/v1`, retries: 1 }));
    await expect(judge.score([{ problem: "p", response: "r" }])).rejects.toThrow(new RegExp(`127\\.0\\.0\\.1:${port}/v1/chat/completions failed after 2 attempt\\(s\\): request failed \\(ECONNREFUSED`));
    expect(() => new HttpJudge(options({ baseUrl: "not a url" }))).toThrow(/'not a url' is not a valid URL/);
    expect(() => new HttpJudge(options({ baseUrl: "ftp://x/v1" }))).toThrow(/must be http/);
  });
});

describe("EngineJudge", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-judge-test-"));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test("generates greedily on our engine; every score lies in [0, 1]; texts without a score take the fallback", async () => {
    const dir = await ensureDemoModel(path.join(tmp, "demo"), 3);
    const judge = await EngineJudge.load({ modelPath: dir, device: { device: "cpu" }, promptTemplate: "{problem}={response} Score:", chat: false, maxNewTokens: 12, fallbackScore: 0.25 });
    const requests = [{ problem: "1+2", response: "3 \\boxed{3}" }, { problem: "5-1", response: "4 \\boxed{4}" }];
    const first = await judge.score(requests);
    expect(first).toHaveLength(2);
    for (const s of first) {
      expect(s.score).toBeGreaterThanOrEqual(0);
      expect(s.score).toBeLessThanOrEqual(1);
      expect(s.parsed ? parseJudgeScore(s.text) : 0.25).toBe(s.score);
    }
    expect(await judge.score(requests)).toEqual(first); // greedy: the same judgement twice
    judge.dispose();
  });
});
