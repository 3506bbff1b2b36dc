// The check of a pipeline's models and presets against what the provider serves (its ListModels):
// each unknown name at its place in the YAML, with a "did you mean" for a near miss.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PipelineLoader, checkModels, type ModelCatalog } from '@elexirion/executor';

const catalog: ModelCatalog = {
  aliases: new Map([
    ['claude_smart', ['analysis', 'production', 'chat']],
    ['claude', []],
    ['gemini', []],
    ['gemini_fast', []],
  ]),
  providers: ['anthropic', 'gemini', 'openai', 'mock'],
};

const dir = mkdtempSync(join(tmpdir(), 'elexirion-models-'));
const loader = new PipelineLoader(dir);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** "line:column" (1-based) of the first `needle` in `text`. */
function where(text: string, needle: string): string {
  const index = text.indexOf(needle);
  if (index < 0) throw new Error(`no "${needle}" in the text`);
  const before = text.slice(0, index).split('\n');
  return `${before.length}:${before.at(-1)!.length + 1}`;
}

async function problems(yaml: string, against = catalog) {
  return checkModels(await loader.loadInline(yaml), against).map((problem) => `${problem.file}:${problem.line}:${problem.column} ${problem.message}`);
}

describe('checking models and presets against the provider', () => {
  it('accepts aliases, their presets, explicit targets and the step types\' own aliases', async () => {
    const yaml = `workflow:
  name: fine
  defaults: { preset: chat }
  steps:
    - { name: a, type: claude, prompt: hi }
    - { name: b, type: claude_smart, preset: analysis, prompt: hi }
    - { name: c, type: llm, model: anthropic/claude-sonnet-5, prompt: hi }
    - { name: d, type: gemini_structured, format: json, schema: {}, prompt: hi }
    - { name: e, type: claude_robust, fallback_model: gemini_fast, prompt: hi }
    - { name: f, type: gemini, model: gemini_fast, prompt: hi }
`;
    expect(await problems(yaml)).toEqual([]);
  });

  it('names an unknown alias at its place, with the near miss and the aliases there are', async () => {
    const yaml = `workflow:
  name: typo
  steps:
    - name: first
      type: claude
      prompt: hi
    - name: second
      type: gemini
      model: gemni_fast
      prompt: hi
    - name: third
      type: llm
      model: something_else
      prompt: hi
`;
    expect(await problems(yaml)).toEqual([
      `<inline>:${where(yaml, 'gemni_fast')} step "second": model "gemni_fast" is neither an alias the provider serves nor "<provider>/<model>"; did you mean "gemini_fast"? (aliases: claude_smart, claude, gemini, gemini_fast)`,
      `<inline>:${where(yaml, 'something_else')} step "third": model "something_else" is neither an alias the provider serves nor "<provider>/<model>" (aliases: claude_smart, claude, gemini, gemini_fast)`,
    ]);
  });

  it('names an unknown preset of the alias, a preset on an explicit target, and an unknown provider', async () => {
    const yaml = `workflow:
  name: presets
  steps:
    - { name: a, type: claude_smart, preset: analisys, prompt: hi }
    - { name: b, type: claude, preset: chat, prompt: hi }
    - { name: c, type: llm, model: anthropic/claude-sonnet-5, preset: chat, prompt: hi }
    - { name: d, type: llm, model: antropic/claude-sonnet-5, prompt: hi }
`;
    expect(await problems(yaml)).toEqual([
      `<inline>:${where(yaml, 'analisys')} step "a": preset: alias "claude_smart" has no preset "analisys"; did you mean "analysis"? (presets: analysis, production, chat)`,
      `<inline>:${where(yaml, 'chat, prompt')} step "b": preset: alias "claude" has no preset "chat" (it has none)`,
      `<inline>:${where(yaml, 'chat, prompt: hi }\n    - { name: d')} step "c": preset: presets belong to aliases, and "anthropic/claude-sonnet-5" is an explicit "<provider>/<model>" target`,
      `<inline>:${where(yaml, 'antropic')} step "d": model "antropic/claude-sonnet-5" names provider "antropic", which is not one of anthropic, gemini, openai, mock; did you mean "anthropic"?`,
    ]);
  });

  it('reports a bad pipeline default once, where it is written, and a type whose alias the provider lacks', async () => {
    const yaml = `workflow:
  name: defaults
  defaults:
    model: claud
  steps:
    - { name: a, type: claude, prompt: hi }
    - { name: b, type: claude_smart, prompt: hi }
    - { name: c, type: claude_robust, fallback_model: gemini_fats, prompt: hi }
`;
    expect(await problems(yaml)).toEqual([
      `<inline>:${where(yaml, 'claud\n')} workflow.defaults.model: "claud" is neither an alias the provider serves nor "<provider>/<model>"; did you mean "claude"? (aliases: claude_smart, claude, gemini, gemini_fast)`,
      `<inline>:${where(yaml, 'gemini_fats')} step "c": fallback_model "gemini_fats" is neither an alias the provider serves nor "<provider>/<model>"; did you mean "gemini_fast"? (aliases: claude_smart, claude, gemini, gemini_fast)`,
    ]);
    const withoutGemini: ModelCatalog = { ...catalog, aliases: new Map([['claude_smart', []]]) };
    const typeOnly = 'workflow:\n  name: t\n  steps:\n    - { name: a, type: gemini, prompt: hi }\n';
    expect(await problems(typeOnly, withoutGemini)).toEqual([
      `<inline>:${where(typeOnly, 'gemini')} step "a": type gemini calls the alias "gemini" when no model is named, and the provider does not serve it; name a model (aliases: claude_smart)`,
    ]);
  });

  it('checks the steps inside parallel and for_each, and the pipelines a pipeline calls, in their own files', async () => {
    writeFileSync(join(dir, 'child.yaml'), 'workflow:\n  name: child\n  steps:\n    - name: inner\n      type: claude\n      model: claude_smrt\n      prompt: hi\n');
    const yaml = `workflow:
  name: parent
  steps:
    - name: both
      type: parallel
      steps:
        - { name: a, type: claude, model: gemini_fst, prompt: hi }
    - name: each
      type: for_each
      items: [1, 2]
      steps:
        - { name: b, type: claude_smart, preset: prod, prompt: hi }
    - { name: call, type: pipeline, pipeline: child }
`;
    const found = await problems(yaml);
    expect(found).toEqual([
      expect.stringMatching(/^<inline>:7:43 step "a": model "gemini_fst" .*did you mean "gemini_fast"\?/),
      expect.stringMatching(/^<inline>:12:50 step "b": preset: alias "claude_smart" has no preset "prod"/),
      expect.stringMatching(/^child\.yaml:6:14 step "inner": model "claude_smrt" .*did you mean "claude_smart"\?/),
    ]);
  });
});
