// The report of a real run (the quick demo: SFT, Octopus Stage I and II) as a person sees it:
// opened in headless Debian Chromium, screenshotted, and every plot read back from the page —
// each point's step and value checked against the run's own metrics.jsonl files.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { chromium, type Browser, type Page } from "playwright-core";

import { quickDemoRun } from "./helpers/quick-demo";

const CHROMIUM = "/usr/bin/chromium";
const CLI = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-report-browser-"));
let browser: Browser | undefined;
afterAll(async () => {
  await browser?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// What each plot must show, written from StepMetrics (lib/rl/step.ts) independently of lib/report.
type RawLine = Record<string, any>;
const BUCKETS: [string, string][] = [["w2c", "w→c"], ["c2c", "c→c"], ["c2w", "c→w"], ["w2w", "w→w"]];
const EXPECTED_SERIES: Record<string, [string, (line: RawLine) => unknown][]> = {
  reward: [["reward", (l) => l.reward]],
  accuracy: [["o1 accuracy", (l) => l.accuracyO1], ["final accuracy", (l) => l.accuracyFinal], ["marker rate", (l) => l.markerRate]],
  transitions: BUCKETS.map(([key, label]) => [
    label,
    (l: RawLine) => {
      const t = l.transitions;
      const total = t.w2c + t.c2c + t.c2w + t.w2w;
      return total > 0 ? t[key] / total : undefined;
    },
  ]),
  kl: [["KL", (l) => l.kl]],
  entropy: [["entropy", (l) => l.entropy]],
  "clip-fraction": [["clip fraction", (l) => l.clipFraction]],
  "response-length": [["response length", (l) => l.responseLength]],
  "tokens-per-second": [["tokens/s", (l) => l.generationTokensPerSecond]],
  eval: [
    ["Acc@t1", (l) => l.eval?.accT1],
    ["Acc@t2", (l) => l.eval?.accT2],
    ["Δi→c", (l) => l.eval?.deltaIncorrectToCorrect],
    ["Δc→i", (l) => l.eval?.deltaCorrectToIncorrect],
  ],
};

interface Point {
  step: number;
  series: string;
  value: number;
}

/** The points each plot should have: the demo's stages one after the other on the step axis. */
function expectedPoints(runDir: string): Map<string, Point[]> {
  const stages = fs.readdirSync(runDir).filter((d) => /^stage\d+$/.test(d)).sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
  expect(stages).toEqual(["stage1", "stage2"]);
  const points = new Map<string, Point[]>();
  let offset = 0;
  for (const stage of stages) {
    const lines: RawLine[] = fs.readFileSync(path.join(runDir, stage, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    for (const line of lines)
      for (const [plot, series] of Object.entries(EXPECTED_SERIES))
        for (const [label, value] of series) {
          const v = value(line);
          if (typeof v === "number") points.set(plot, [...(points.get(plot) ?? []), { step: offset + line.step, series: label, value: v }]);
        }
    offset += lines[lines.length - 1].step;
  }
  return points;
}

/** Every plot on the page: its points (from their aria-labels) and the geometry of its marks. */
async function readPlots(page: Page) {
  return page.$$eval("figure[data-plot]", (figures) =>
    figures.map((figure) => {
      const svg = figure.querySelector("svg")!;
      const svgBox = svg.getBoundingClientRect();
      const points = [...svg.querySelectorAll('[aria-roledescription="point"]')].map((p) => {
        const fields = Object.fromEntries((p.getAttribute("aria-label") ?? "").split("; ").map((kv) => kv.split(": ")));
        const box = p.getBoundingClientRect();
        const inside = box.left >= svgBox.left - 1 && box.right <= svgBox.right + 1 && box.top >= svgBox.top - 1 && box.bottom <= svgBox.bottom + 1;
        return { fields, width: box.width, height: box.height, inside };
      });
      const marks = [...svg.querySelectorAll(".role-mark")].map((g) => (g as SVGGraphicsElement).getBBox());
      const lines = [...svg.querySelectorAll(".mark-line path")].map((p) => ({ d: p.getAttribute("d") ?? "", width: (p as SVGGraphicsElement).getBBox().width }));
      const title = svg.querySelector(".role-title-text");
      const titleBox = title?.getBoundingClientRect();
      return {
        id: figure.getAttribute("data-plot")!,
        title: title?.textContent ?? "",
        titleInside: !!titleBox && titleBox.width > 0 && titleBox.left >= svgBox.left && titleBox.top >= svgBox.top - 1,
        svgWidth: svgBox.width,
        svgHeight: svgBox.height,
        points,
        marksWidth: Math.max(0, ...marks.map((b) => b.width)),
        marksHeight: Math.max(0, ...marks.map((b) => b.height)),
        lines,
      };
    }),
  );
}

/** Debian's chromium, installed by the script `npm pretest` runs; without it, the test fails with the script's instructions. */
function ensureChromium(): void {
  if (fs.existsSync(CHROMIUM)) return;
  const script = spawnSync(process.execPath, [path.join(__dirname, "..", "scripts", "ensure-chromium.js")], { encoding: "utf8" });
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${script.stdout}${script.stderr}`.trim() || `${CHROMIUM} not found`);
}

/** Share of non-white pixels and number of distinct colours of a PNG, decoded by the browser itself. */
async function pngInk(page: Page, png: Buffer): Promise<{ width: number; height: number; inked: number; colours: number }> {
  await page.setContent(`<img id="shot" src="data:image/png;base64,${png.toString("base64")}">`);
  return page.$eval("#shot", async (img: HTMLImageElement) => {
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d")!;
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let inked = 0;
    const colours = new Set<number>();
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250) inked++;
      colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    return { width: canvas.width, height: canvas.height, inked: inked / (data.length / 4), colours: colours.size };
  });
}

test("the quick demo's report renders in headless Chromium with every plot showing the run's metrics", async () => {
  ensureChromium();
  const { dir } = await quickDemoRun();

  // The demo wrote its report itself; `octo-native report` writes it again elsewhere.
  expect(fs.existsSync(path.join(dir, "report.html"))).toBe(true);
  expect(fs.existsSync(path.join(dir, "plots", "reward.svg"))).toBe(true);
  for (const stage of ["stage1", "stage2"]) expect(fs.existsSync(path.join(dir, stage, "report.html"))).toBe(true);
  const out = path.join(tmp, "report.html");
  const cli = spawnSync(process.execPath, [CLI, "report", dir, "--out", out], { encoding: "utf8" });
  expect(cli.status).toBe(0);
  expect(cli.stdout.trim()).toBe(out);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const requests: string[] = [];
  const pageErrors: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  const url = `file://${out}`;
  await page.goto(url, { waitUntil: "load" });
  expect(requests).toEqual([url]); // self-contained: nothing else is fetched
  expect(pageErrors).toEqual([]);
  expect(await page.title()).toContain("octo-native report");
  expect(await page.locator("table").first().textContent()).toContain("after Stage 2");

  const plots = await readPlots(page);
  const expected = expectedPoints(dir);
  expect(plots.map((p) => p.id).sort()).toEqual([...expected.keys()].sort());
  for (const plot of plots) {
    const want = expected.get(plot.id)!;
    expect({ plot: plot.id, points: plot.points.length }).toEqual({ plot: plot.id, points: want.length });
    expect({ plot: plot.id, titled: plot.title.length > 0 && plot.titleInside }).toEqual({ plot: plot.id, titled: true });
    expect(plot.svgWidth).toBeGreaterThan(100);
    expect(plot.svgHeight).toBeGreaterThan(100);
    expect(plot.marksWidth).toBeGreaterThan(0);
    expect(plot.marksHeight).toBeGreaterThan(0);
    expect(plot.lines.some((l) => l.d.length > 0 && l.width > 0)).toBe(true);
    const shown = plot.points.map(({ fields }) => {
      const valueKey = Object.keys(fields).find((k) => !["step", "series", "stage"].includes(k))!;
      // Vega writes negative numbers with a true minus sign (U+2212).
      return { step: Number(fields.step), series: fields.series, value: Number(fields[valueKey].replace(/\u2212/g, "-")) };
    });
    const key = (p: Point) => `${p.series}@${p.step}`;
    const shownByKey = new Map(shown.map((p) => [key(p), p.value]));
    for (const point of want) {
      const value = shownByKey.get(key(point));
      expect({ plot: plot.id, point: key(point), shown: value !== undefined }).toEqual({ plot: plot.id, point: key(point), shown: true });
      expect(Math.abs(value! - point.value)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(point.value)));
    }
    for (const p of plot.points) {
      expect(p.width).toBeGreaterThan(0);
      expect(p.height).toBeGreaterThan(0);
      expect(p.inside).toBe(true);
    }
  }

  const screenshot = await page.screenshot({ fullPage: true });
  fs.writeFileSync(path.join(tmp, "report.png"), screenshot);
  if (process.env.OCTO_NATIVE_REPORT_SCREENSHOT) fs.writeFileSync(process.env.OCTO_NATIVE_REPORT_SCREENSHOT, screenshot);
  const ink = await pngInk(page, screenshot);
  expect(ink.width).toBe(1400);
  expect(ink.height).toBeGreaterThan(900);
  expect(ink.inked).toBeGreaterThan(0.02);
  expect(ink.colours).toBeGreaterThan(20);
}, 900_000);
