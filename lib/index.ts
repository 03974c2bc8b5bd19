/** The library entry: `import { … } from "octo-native"`. */
export { Model, ModelLoadError, inspectCheckpoint, replaceDirectory } from "./model";
export type { Checkpoint, ForwardOptions, SaveOptions } from "./model";
export { modelSpecFromConfig, configFromModelSpec, ModelConfigError, SUPPORTED_ARCHITECTURES } from "./model-config";
export { native } from "./native";
export type { ModelSpec, TensorRecord, DeviceOptions, EngineInfo } from "./native";
export { parseSafetensorsHeader, readSafetensorsHeader, buildSafetensorsHeader, SafetensorsError, DTYPE_BYTES } from "./safetensors";
export { resolveSamplingParams, samplingParamsSchema } from "./sampling";
export type { SamplingParams, GenerationRequest, GenerationResult, GenerationStats, GenerateOptions, FinishReason, PrefixCache } from "./sampling";
export { stopSequencesFor, truncateAtStopStrings, applyStopStrings } from "./stop-strings";
export { TextTokenizer, TokenizerError } from "./tokenizer";
export type { ChatMessage, ChatTemplateOptions } from "./tokenizer";
export { ensureDemoModel, DEMO_MODEL_SPEC, defaultDemoModelDir } from "./demo-model";
export { generateFromPrompt } from "./generate";
export { installInfo } from "./info";
