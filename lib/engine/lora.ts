/**
 * LoRA adapters in PEFT's format (docs/methods.md §14): what `adapter_config.json` and
 * `adapter_model.safetensors` hold, read and checked against a base model before any byte is
 * loaded, and written so that transformers (PeftModel.from_pretrained) and vLLM (--lora-modules)
 * load them. The math is native/core/lora.h: y = W x + (alpha / r) · B A dropout(x).
 */
import fs from "node:fs";
import path from "node:path";

import type { ModelSpec, TensorRecord } from "../native";
import { readRegularFile } from "../util/files";
import { readSafetensorsHeader } from "./safetensors";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";

/** The projections an adapter may sit on (PEFT's module names), in the engine's order. */
export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

/** The `lora` block of a run config (lib/rl/config.ts), and what an adapter_config.json says. */
export interface LoraSettings {
  rank: number;
  /** the update is scaled by alpha / rank */
  alpha: number;
  /** dropout on the adapter's input, in training forwards only */
  dropout: number;
  targetModules: readonly LoraModule[];
}

export class AdapterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AdapterError";
  }
}

/** True when `dir` holds a PEFT adapter (adapter_config.json) rather than a whole model. */
export function isAdapterDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE)) && !fs.existsSync(path.join(dir, "config.json"));
}

/** PEFT's name of an adapter tensor: base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_<A|B>.weight */
export function loraTensorName(layer: number, module: LoraModule, which: "A" | "B"): string {
  const block = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(module) ? "self_attn" : "mlp";
  return `base_model.model.model.layers.${layer}.${block}.${module}.lora_${which}.weight`;
}

/** [out, in] of a projection of `spec`. */
function projectionShape(spec: ModelSpec, module: LoraModule): [number, number] {
  const C = spec.hiddenSize, q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim, I = spec.intermediateSize;
  const shapes: Record<LoraModule, [number, number]> = {
    q_proj: [q, C], k_proj: [kv, C], v_proj: [kv, C], o_proj: [C, q], gate_proj: [I, C], up_proj: [I, C], down_proj: [C, I],
  };
  return shapes[module];
}

/** The adapter tensors of `settings` on `spec`: A [r, in] and B [out, r] per targeted projection per layer, layer by layer. */
export function expectedAdapterTensors(spec: ModelSpec, settings: LoraSettings): { name: string; shape: number[]; module: LoraModule; layer: number }[] {
  const out: { name: string; shape: number[]; module: LoraModule; layer: number }[] = [];
  for (let layer = 0; layer < spec.numLayers; layer++)
    for (const module of LORA_MODULES) {
      if (!settings.targetModules.includes(module)) continue;
      const [o, i] = projectionShape(spec, module);
      out.push({ name: loraTensorName(layer, module, "A"), shape: [settings.rank, i], module, layer });
      out.push({ name: loraTensorName(layer, module, "B"), shape: [o, settings.rank], module, layer });
    }
  return out;
}

/** Throws unless `settings` is a LoRA config the engine runs; `where` names its source. */
export function checkLoraSettings(settings: LoraSettings, where: string): void {
  if (!(Number.isInteger(settings.rank) && settings.rank > 0)) throw new AdapterError(`${where}: the rank must be a positive integer, not ${settings.rank}`);
  if (!(Number.isFinite(settings.alpha) && settings.alpha > 0)) throw new AdapterError(`${where}: alpha must be a positive number, not ${settings.alpha}`);
  if (!(settings.dropout >= 0 && settings.dropout < 1)) throw new AdapterError(`${where}: dropout must be in [0, 1), not ${settings.dropout}`);
  if (settings.targetModules.length === 0) throw new AdapterError(`${where}: the target modules are empty; name some of ${LORA_MODULES.join(", ")}`);
  for (const m of settings.targetModules)
    if (!LORA_MODULES.includes(m)) throw new AdapterError(`${where}: target module '${m}' is not one of ${LORA_MODULES.join(", ")}`);
  if (new Set(settings.targetModules).size !== settings.targetModules.length) throw new AdapterError(`${where}: a target module is named twice`);
}

/** The adapter_config.json PEFT writes for `settings` (LoRA on a causal LM, no bias, plain alpha / r scaling). */
export function adapterConfigJson(settings: LoraSettings, baseModel: string | undefined): Record<string, unknown> {
  return {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: baseModel ?? null,
    r: settings.rank,
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    target_modules: [...settings.targetModules],
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
}

export interface Adapter {
  dir: string;
  settings: LoraSettings;
  /** base_model_name_or_path, when the config names one */
  baseModel?: string;
  /** one record per adapter tensor, in expectedAdapterTensors order */
  records: TensorRecord[];
}

const isEmpty = (value: unknown) => value === undefined || value === null || (Array.isArray(value) && value.length === 0) ||
  (typeof value === "object" && value !== null && Object.keys(value).length === 0);

/** Reads and checks an adapter's config.json (without a base: its settings and the base it names). */
export function readAdapterConfig(dir: string): { settings: LoraSettings; baseModel?: string } {
  const file = path.join(dir, ADAPTER_CONFIG_FILE);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new AdapterError(`adapter directory '${dir}' does not exist (expected a PEFT LoRA adapter: ${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE})`);
  if (!fs.existsSync(file)) throw new AdapterError(`${dir} has no ${ADAPTER_CONFIG_FILE}; a PEFT LoRA adapter directory holds ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readRegularFile(file, "utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new AdapterError(`${file}: ${error instanceof SyntaxError ? "not valid JSON" : "cannot read"} (${(error as Error).message})`);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) throw new AdapterError(`${file}: must hold a JSON object`);
  const unsupported = (key: string, why: string): never => {
    throw new AdapterError(`${file}: '${key}' ${why}; octo-native runs plain LoRA adapters (PEFT's defaults for these keys)`);
  };
  if (config.peft_type !== "LORA") unsupported("peft_type", `is ${JSON.stringify(config.peft_type)}, not "LORA"`);
  if (config.bias !== undefined && config.bias !== "none") unsupported("bias", `is ${JSON.stringify(config.bias)}, not "none"`);
  for (const key of ["use_rslora", "use_dora", "fan_in_fan_out"])
    if (config[key] !== undefined && config[key] !== false) unsupported(key, `is ${JSON.stringify(config[key])}`);
  for (const key of ["modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern"])
    if (!isEmpty(config[key])) unsupported(key, `is set (${JSON.stringify(config[key]).slice(0, 60)})`);
  const modules = config.target_modules;
  if (typeof modules === "string")
    throw new AdapterError(`${file}: 'target_modules' is the pattern ${JSON.stringify(modules)}; octo-native needs the list of module names (some of ${LORA_MODULES.join(", ")})`);
  if (!Array.isArray(modules)) throw new AdapterError(`${file}: 'target_modules' must be a list of module names (some of ${LORA_MODULES.join(", ")})`);
  const settings: LoraSettings = {
    rank: config.r as number,
    alpha: config.lora_alpha as number,
    dropout: (config.lora_dropout ?? 0) as number,
    targetModules: LORA_MODULES.filter((m) => modules.includes(m)),
  };
  const unknown = modules.find((m) => !LORA_MODULES.includes(m as LoraModule));
  if (unknown !== undefined) throw new AdapterError(`${file}: target module ${JSON.stringify(unknown)} is not one of ${LORA_MODULES.join(", ")}`);
  if (typeof settings.rank !== "number") throw new AdapterError(`${file}: 'r' (the rank) must be a positive integer`);
  if (typeof settings.alpha !== "number") throw new AdapterError(`${file}: 'lora_alpha' must be a positive number`);
  checkLoraSettings(settings, file);
  const base = config.base_model_name_or_path;
  return { settings, baseModel: typeof base === "string" && base !== "" ? base : undefined };
}

/** Reads an adapter directory and checks every tensor against the base `spec`: names, shapes, dtypes. */
export function inspectAdapter(dir: string, spec: ModelSpec): Adapter {
  const { settings, baseModel } = readAdapterConfig(dir);
  const weights = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(weights)) {
    const pickle = fs.existsSync(path.join(dir, "adapter_model.bin"));
    throw new AdapterError(
      pickle
        ? `${dir} holds only adapter_model.bin (a PyTorch pickle, never loaded: it can run code). Re-save it with safe_serialization=True`
        : `${dir} has no ${ADAPTER_WEIGHTS_FILE}; a PEFT LoRA adapter directory holds ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`,
    );
  }
  const found = new Map(readSafetensorsHeader(weights).tensors.map((t) => [t.name, t]));
  const records: TensorRecord[] = [];
  for (const expected of expectedAdapterTensors(spec, settings)) {
    const record = found.get(expected.name);
    if (!record)
      throw new AdapterError(
        `${weights}: tensor '${expected.name}' is missing; target_modules names ${expected.module} and the base has ${spec.numLayers} layers (is the adapter for this base model?)`,
      );
    if (record.shape.join() !== expected.shape.join())
      throw new AdapterError(
        `${weights}: tensor '${record.name}' has shape [${record.shape}] but r = ${settings.rank} on this base's ${expected.module} ` +
          `[${projectionShape(spec, expected.module)}] needs [${expected.shape}] (is the adapter for this base model?)`,
      );
    if (!["F32", "BF16", "F16", "F64"].includes(record.dtype)) throw new AdapterError(`${weights}: tensor '${record.name}' is ${record.dtype}; adapter tensors must be F32, BF16, F16 or F64`);
    records.push(record);
    found.delete(expected.name);
  }
  const [extra] = found.keys();
  if (extra !== undefined)
    throw new AdapterError(`${weights}: unexpected tensor '${extra}': not an adapter of ${adapterConfigSummary(settings)} on this base (${spec.numLayers} layers)`);
  return { dir, settings, baseModel, records };
}

function adapterConfigSummary(s: LoraSettings): string {
  return `r = ${s.rank}, target_modules [${s.targetModules.join(", ")}]`;
}
