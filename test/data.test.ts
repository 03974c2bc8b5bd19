// Datasets: the real benchmark files in ../shared/data through each adapter, a verl-layout
// parquet written here, bad files, and the seeded cursor that checkpoints save.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { parquetWriteBuffer } from "hyparquet-writer";

import { DataCursor, DatasetError, loadDataset } from "../lib/data";

const SHARED = path.resolve(__dirname, "..", "..", "shared", "data");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-data-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("real benchmark files", () => {
  test("GSM8K: jsonl and parquet copies of the test split agree; answers are the numbers after ####", async () => {
    const jsonl = await loadDataset({ path: path.join(SHARED, "gsm8k", "test.jsonl") });
    const parquet = await loadDataset({ path: path.join(SHARED, "gsm8k", "test.parquet") });
    expect(jsonl).toHaveLength(1319);
    expect(parquet).toHaveLength(1319);
    expect(parquet.map((e) => [e.problem, e.answer])).toEqual(jsonl.map((e) => [e.problem, e.answer]));
    expect(jsonl[0].answer).toBe("18");
    expect(jsonl.every((e) => /^-?\d+(\.\d+)?$/.test(e.answer))).toBe(true);
    expect((await loadDataset({ path: path.join(SHARED, "gsm8k", "train.jsonl") })).length).toBe(7473);
  });

  test("MATH-500 jsonl and the verl-prepared parquet hold the same answers", async () => {
    const jsonl = await loadDataset({ path: path.join(SHARED, "math500", "test.jsonl") });
    const parquet = await loadDataset({ path: path.join(SHARED, "math500", "math500_verl.parquet") });
    expect(jsonl).toHaveLength(500);
    expect(parquet.map((e) => e.answer)).toEqual(jsonl.map((e) => e.answer));
    expect(jsonl[0].id).toMatch(/test\//);
  });

  test("AIME24 and AMC23 load with the math adapter", async () => {
    expect(await loadDataset({ path: path.join(SHARED, "aime24", "test.jsonl") })).toHaveLength(30);
    const amc = await loadDataset({ path: path.join(SHARED, "amc23", "test.jsonl") });
    expect(amc).toHaveLength(40);
    expect(amc.every((e) => e.answer.length > 0)).toBe(true);
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
