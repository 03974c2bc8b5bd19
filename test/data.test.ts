// Datasets: the real benchmark files the repo ships (data/, and parquet copies written by
// pyarrow in test/fixtures/datasets/) through each adapter, the AIME/AMC layouts, a verl-layout
// parquet written here, bad files, and the seeded cursor that checkpoints save.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { parquetWriteBuffer } from "hyparquet-writer";

import { DataCursor, DatasetError, loadDataset } from "../lib/rl/data";

const DATA = path.resolve(__dirname, "..", "data");
const PARQUET = path.join(__dirname, "fixtures", "datasets");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-data-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("real benchmark files", () => {
  test("GSM8K: jsonl and parquet copies of the test split agree; answers are the numbers after ####", async () => {
    const jsonl = await loadDataset({ path: path.join(DATA, "gsm8k", "test.jsonl") });
    const parquet = await loadDataset({ path: path.join(PARQUET, "gsm8k-test.parquet") });
    expect(jsonl).toHaveLength(1319);
    expect(parquet).toHaveLength(1319);
    expect(parquet.map((e) => [e.problem, e.answer])).toEqual(jsonl.map((e) => [e.problem, e.answer]));
    expect(jsonl[0].answer).toBe("18");
    expect(jsonl.every((e) => /^-?\d+(\.\d+)?$/.test(e.answer))).toBe(true);
    expect((await loadDataset({ path: path.join(DATA, "gsm8k", "train.jsonl") })).length).toBe(7473);
  });

  test("MATH-500 jsonl and the verl-prepared parquet hold the same answers", async () => {
    const jsonl = await loadDataset({ path: path.join(DATA, "math500", "test.jsonl") });
    const parquet = await loadDataset({ path: path.join(PARQUET, "math500_verl.parquet") });
    expect(jsonl).toHaveLength(500);
    expect(parquet.map((e) => e.answer)).toEqual(jsonl.map((e) => e.answer));
    expect(jsonl[0].id).toMatch(/test\//);
  });

  test("AIME24 and AMC23 layouts load with the math adapter (zero-padded string and float answers)", async () => {
    // Not shipped (no licence to redistribute): rows of their published layouts, made up here.
    const aime = path.join(tmp, "aime24.jsonl"), amc = path.join(tmp, "amc23.jsonl");
    fs.writeFileSync(aime, [
      { id: 60, problem: "Find the remainder when 2^10 is divided by 1000.", solution: "1024 - 1000 = 24", answer: "024", url: "https://example.org/1", year: 2024 },
      { id: 61, problem: "Compute 7 * 11.", solution: "77", answer: "077", url: "https://example.org/2", year: 2024 },
    ].map((r) => JSON.stringify(r)).join("\n") + "\n");
    // written as the file has them: float literals such as 27.0
    fs.writeFileSync(amc, [
      `{"id": 0, "problem": "What is 3^3?", "answer": 27.0, "url": "https://example.org/3", "question": "What is 3^3?"}`,
      `{"id": 1, "problem": "What is 1 - 2?", "answer": -1.0, "url": "https://example.org/4", "question": "What is 1 - 2?"}`,
    ].join("\n") + "\n");
    expect((await loadDataset({ path: aime })).map((e) => [e.id, e.answer])).toEqual([["60", "024"], ["61", "077"]]);
    // 27.0 parses to the number 27: the answer is its text
    expect((await loadDataset({ path: amc })).map((e) => e.answer)).toEqual(["27", "-1"]);
  });

  test("a relative path not found in the working directory is taken from the package (shipped recipes run anywhere)", async () => {
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      expect(await loadDataset({ path: "data/math500/test.jsonl" })).toHaveLength(500);
      await expect(loadDataset({ path: "data/nope.jsonl" })).rejects.toThrow(/'data\/nope.jsonl' does not exist \(looked in .* and in the package at /);
    } finally {
      process.chdir(cwd);
    }
  });
});

test("a verl-style parquet (prompt messages + reward_model.ground_truth) is read with its messages", async () => {
  const file = path.join(tmp, "verl.parquet");
  const buffer = parquetWriteBuffer({
    columnData: [
      { name: "data_source", data: ["gsm8k", "gsm8k"] },
      { name: "prompt", data: [[{ role: "user", content: "What is 1+1?" }], [{ role: "system", content: "Be brief." }, { role: "user", content: "What is 2+2?" }]] },
      { name: "ability", data: ["math", "math"] },
      { name: "reward_model", data: [{ style: "rule", ground_truth: "2" }, { style: "rule", ground_truth: "4" }] },
      { name: "extra_info", data: [{ index: 0 }, { index: 1 }] },
    ],
  });
  fs.writeFileSync(file, Buffer.from(buffer));
  const examples = await loadDataset({ path: file });
  expect(examples.map((e) => [e.problem, e.answer])).toEqual([["What is 1+1?", "2"], ["What is 2+2?", "4"]]);
  expect(examples[1].messages).toHaveLength(2);
});

describe("bad datasets give errors that name the file and what is wrong", () => {
  const write = (name: string, text: string) => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, text);
    return file;
  };
  test.each([
    ["missing file", () => path.join(tmp, "nope.jsonl"), /does not exist/],
    ["empty dataset", () => write("empty.jsonl", "\n\n"), /the dataset is empty/],
    ["bad JSON line", () => write("bad.jsonl", '{"problem":"a","answer":"1"}\n{oops\n'), /bad\.jsonl:2: not valid JSON/],
    ["unknown layout", () => write("odd.jsonl", '{"text":"a"}\n'), /cannot tell the layout.*text/],
    ["GSM8K answer without ####", () => write("gsm.jsonl", '{"question":"q","answer":"#### 3"}\n{"question":"q","answer":"3"}\n'), /gsm\.jsonl: row 2: .*####/],
    ["unknown extension", () => write("data.csv", "a,b\n"), /unknown dataset format/],
    ["not parquet", () => write("fake.parquet", "not parquet at all"), /not a readable parquet file/],
  ])("%s", async (_name, makeFile, message) => {
    const error = await loadDataset({ path: makeFile() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatasetError);
    expect((error as Error).message).toMatch(message);
  });
});

test("GSM8K answers lose their thousands separators", async () => {
  const file = path.join(tmp, "thousands.jsonl");
  fs.writeFileSync(file, JSON.stringify({ question: "q", answer: "so 1,200 in total\n#### 1,200" }) + "\n");
  expect((await loadDataset({ path: file })).map((e) => e.answer)).toEqual(["1200"]);
});

describe("data cursor", () => {
  test("a seeded order that covers each epoch once and reshuffles the next", () => {
    const cursor = DataCursor.start(10, 7);
    const epoch0 = cursor.next(10), epoch1 = cursor.next(10);
    expect([...epoch0].sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect([...epoch1].sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect(epoch1).not.toEqual(epoch0);
    expect(DataCursor.start(10, 7).next(10)).toEqual(epoch0);
    expect(DataCursor.start(10, 8).next(10)).not.toEqual(epoch0);
  });

  test("resuming from a snapshot continues the same sequence", () => {
    const straight = DataCursor.start(13, 3);
    const expected = straight.next(40);
    const first = DataCursor.start(13, 3);
    const head = first.next(17);
    const resumed = new DataCursor(13, JSON.parse(JSON.stringify(first.snapshot)));
    expect([...head, ...resumed.next(23)]).toEqual(expected);
  });
});
